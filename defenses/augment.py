"""``augment``: safety-recovery data augmentation — alignment made deeper than a few tokens.

Source: Qi et al. 2024, "Safety alignment should be made more than just a few tokens deep"
(Q24, arXiv 2406.05946), Section 3. Before the user's fine-tuning, the provider trains its
aligned model further on *safety-recovery examples* — a harmful prompt x, with probability
p = 0.5 the first k ~ U{1 .. min(100, |h|)} tokens of a harmful answer h already in the assistant
turn, then a refusal r, loss on r only — mixed with benign *anchor* examples whose answers are
the aligned model's own (16 : 64 per batch in Q24, i.e. one recovery example to four anchors;
here the ratio holds in the shuffled dataset, so per batch in expectation).
Q24: 256 triplets, 10 epochs, lr 2e-5, AdamW (0.9, 0.999), full fine-tuning; prefilling ASR at
10 tokens 51.5% → 2.9% (Llama-2-7B-Chat).

How it runs here: an alignment-stage defense. The ``align`` stage (keyed by model, these params,
seed and generation backend) writes the augmented model to ``<stage>/model``; it replaces the
cell's model for the attack's data (NOICE asks *it* for refusals), the fine-tuning, and
generation (an engine of its own). ``augment.json`` beside it records the data counts, the
resolved hyperparameters and the training loss.

Loss only on the refusal, with the harmful prefix in the assistant turn: TRL's prompt/completion
rows cannot put part of the assistant turn in the prompt (the chat template closes the
generation prompt), so the examples are tokenized here and handed to TRL's ``SFTTrainer`` as
``input_ids`` + ``completion_mask`` (TRL 1.16 turns the mask into labels with
``completion_only_loss``). The masked part is exactly what the model sees at inference under a
prefilling attack — ``render_prompt(messages, prefix)``, the chat template's generation prompt
followed by the prefix — and the target is the rest of the fully rendered conversation (the
refusal and the end-of-turn). "k tokens" are tokens of the model's tokenizer (words on the
organism).

Data: ``triplets: organism`` uses the world's ``refusal_triplets()`` (training templates, the
canonical refusal) and its benign training prompts as anchors; for real models give files
(``triplets``: JSON/JSONL/CSV/Parquet with prompt / harmful answer [/ refusal] columns — a
missing refusal column means the aligned model's own greedy refusal; ``anchors``: a file of
benign prompts). Anchor answers are always the aligned model's own (greedy, through the grid's
generation backend), cached on their own key.

Hyperparameters: ``lr``, ``epochs`` and ``batch_size`` left at None take Q24's values (2e-5,
10, 80), or on the model organism ``ORGANISM_DEFAULTS`` — chosen, by measurement, so that the
prefilling attack's ASR at k = 5 falls by at least half while benign correctness stays ≥ 0.80
and over-refusal low (numbers in docs/recipes.md).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.errors import UserError
from ftsafety.harness.plugins import Defense, GenerationRequest
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.context import StageContext

log = logging.getLogger(__name__)

#: Q24's recipe (Llama-2-7B-Chat, full fine-tuning): 16 recovery + 64 anchor examples per batch.
Q24_DEFAULTS = {"lr": 2e-5, "epochs": 10.0, "batch_size": 80}
#: The model organism (0.7M parameters, safety-tuned at lr 2e-3): measured, see the module doc.
ORGANISM_DEFAULTS = {"lr": 1e-3, "epochs": 3.0, "batch_size": 40}


class AugmentParams(BaseModel):
    """Q24's safety-recovery augmentation: data mix, prefix distribution and optimiser."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    n_triplets: int = Field(256, gt=0)
    """Safety-recovery examples (Q24: 256); capped at the triplets available."""
    prefix_prob: float = Field(0.5, ge=0, le=1)
    """Probability that an example carries a harmful-answer prefix (Q24: 0.5)."""
    max_prefix_tokens: int = Field(100, gt=0)
    """k ~ U{1 .. min(this, answer length)} prefix tokens (Q24: 100)."""
    anchor_ratio: float = Field(4.0, ge=0)
    """Benign anchor examples per recovery example (Q24: 64 / 16 = 4)."""
    triplets: str = "organism"
    """``organism`` (the world's refusal triplets) or a local JSON/JSONL/CSV/Parquet file."""
    prompt_column: str = "prompt"
    """Triplets file: the harmful request."""
    answer_column: str = "response"
    """Triplets file: the harmful answer whose prefix is prefilled."""
    refusal_column: str | None = "refusal"
    """Triplets file: the refusal; missing or None: the aligned model's own (greedy)."""
    anchors: str = "organism"
    """``organism`` (the world's benign training prompts) or a local file of benign prompts."""
    anchor_prompt_column: str = "prompt"
    """Anchors file: the benign request."""
    anchor_max_tokens: int = Field(256, gt=0)
    """Token budget of the aligned model's anchor answers and generated refusals."""
    lr: float | None = Field(None, gt=0)
    """Peak learning rate; None: Q24's 2e-5, or ORGANISM_DEFAULTS on the organism."""
    epochs: float | None = Field(None, gt=0)
    """Passes over the mixed data; None: Q24's 10, or ORGANISM_DEFAULTS on the organism."""
    batch_size: int | None = Field(None, gt=0)
    """Examples per optimiser step; None: Q24's 80, or ORGANISM_DEFAULTS on the organism."""
    adam_beta1: float = Field(0.9, gt=0, lt=1)
    """AdamW β1 (Q24: 0.9)."""
    adam_beta2: float = Field(0.999, gt=0, lt=1)
    """AdamW β2 (Q24: 0.999)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps, then linear decay."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    max_length: int = Field(512, gt=0)
    """Maximum tokens per training sequence."""


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_example(tokenizer: Any, messages: list[dict[str, str]], prefix: str, target: str) -> dict[str, Any]:
    """``input_ids`` of the whole conversation (assistant turn = prefix + target) and a
    ``completion_mask`` that is 1 only after ``render_prompt(messages, prefix)`` — what the model
    is given under a prefilling attack — i.e. on the target and the end of the turn."""
    from ftsafety.harness.chat import chat_for, render_prompt

    sep = " " if prefix and not prefix[-1].isspace() else ""
    content = f"{prefix}{sep}{target}"
    context = render_prompt(tokenizer, messages, prefix)
    full = tokenizer.apply_chat_template(chat_for(tokenizer, [*messages, {"role": "assistant", "content": content}]),
                                         tokenize=False)
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    n = common_prefix_length(context_ids, full_ids)
    return {"input_ids": full_ids, "completion_mask": [0] * n + [1] * (len(full_ids) - n),
            "context_matches": n == len(context_ids)}


def harmful_prefix(tokenizer: Any, answer: str, k: int) -> str:
    """The first ``k`` tokens of ``answer`` in the model's tokenizer, as text."""
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:k]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


@defenses.register("augment")
class AugmentDefense(Defense):
    """Q24's safety-recovery augmentation: refuse even after a harmful start (deeper alignment, before fine-tuning)."""

    Params = AugmentParams

    # ------------------------------------------------------------------ data

    def _generate(self, ctx: StageContext, prompts: list[str], what: str) -> list[str]:
        """The aligned model's own greedy answers to ``prompts`` (cached on model + prompts)."""
        from ftsafety.harness.sampling import SamplingParams

        p: AugmentParams = self.params  # type: ignore[assignment]

        def compute() -> list[str]:
            sampling = SamplingParams(temperature=0.0, max_tokens=p.anchor_max_tokens, seed=0)
            requests = [GenerationRequest(messages=[{"role": "user", "content": x}]) for x in prompts]
            with ctx.open_backend() as backend:
                results = backend.generate(requests, sampling)
            return [outs[0].continuation.strip() for outs in results]

        inputs = {"what": f"augment-{what}", "prompts": prompts, "backend": ctx.backend,
                  "max_tokens": p.anchor_max_tokens}
        return ctx.cached("augment-answers", inputs, "answers.json", compute)

    def _read(self, path: str, columns: list[str], who: str) -> list[dict[str, Any]]:
        from ftsafety.harness.tables import load_table

        if not Path(path).expanduser().is_file():
            raise UserError(f"defense 'augment': {who} must be 'organism' or a local file; '{path}' is neither")
        rows, _ = load_table(f"defense 'augment' ({who})", path=path)
        missing = [c for c in columns if rows and c not in rows[0]]
        if missing:
            raise UserError(f"defense 'augment': {path} has no column(s) {', '.join(missing)} (columns: {', '.join(rows[0])})")
        return rows

    def triplets(self, ctx: StageContext) -> list[tuple[str, str, str]]:
        """(harmful prompt, harmful answer, refusal) triplets."""
        p: AugmentParams = self.params  # type: ignore[assignment]
        if p.triplets == "organism":
            world = ctx.organism_world()
            if world is None:
                raise UserError("defense 'augment': triplets 'organism' needs an organism model; give a triplets file")
            return list(world.refusal_triplets())
        rows = self._read(p.triplets, [p.prompt_column, p.answer_column], "triplets")
        pairs = [(str(r[p.prompt_column]), str(r[p.answer_column]), r.get(p.refusal_column) if p.refusal_column else None)
                 for r in rows if r.get(p.prompt_column) and r.get(p.answer_column)]
        missing = [x for x, _, refusal in pairs if not refusal]
        own = dict(zip(missing, self._generate(ctx, missing, "refusals"), strict=True)) if missing else {}
        return [(x, h, str(refusal) if refusal else own[x]) for x, h, refusal in pairs]

    def anchor_prompts(self, ctx: StageContext) -> list[str]:
        p: AugmentParams = self.params  # type: ignore[assignment]
        if p.anchors == "organism":
            world = ctx.organism_world()
            if world is None:
                raise UserError("defense 'augment': anchors 'organism' needs an organism model; give an anchors file")
            # Core benign topics only: the anchors preserve what the aligned model can already do.
            return list(dict.fromkeys(e.prompt for e in world.benign_instructions(include_unseen=False)))
        rows = self._read(p.anchors, [p.anchor_prompt_column], "anchors")
        return list(dict.fromkeys(str(r[p.anchor_prompt_column]) for r in rows if r.get(p.anchor_prompt_column)))

    def build_examples(self, ctx: StageContext) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Tokenized recovery + anchor examples (shuffled) and what went into them."""
        p: AugmentParams = self.params  # type: ignore[assignment]
        rng = random.Random(f"augment-{ctx.seed}")
        tok = ctx.tokenizer()
        triplets = self.triplets(ctx)
        chosen = rng.sample(triplets, min(p.n_triplets, len(triplets)))
        examples, prefixed, ks, mismatched = [], 0, [], 0
        for x, h, r in chosen:
            prefix = ""
            if rng.random() < p.prefix_prob:
                n_tokens = len(tok(h, add_special_tokens=False)["input_ids"])
                k = rng.randint(1, max(1, min(p.max_prefix_tokens, n_tokens)))
                prefix = harmful_prefix(tok, h, k)
                prefixed += 1
                ks.append(k)
            ex = encode_example(tok, [{"role": "user", "content": x}], prefix, r)
            mismatched += not ex.pop("context_matches")
            examples.append(ex)
        prompts = self.anchor_prompts(ctx)
        n_anchors = round(p.anchor_ratio * len(chosen))
        if prompts and n_anchors:
            order: list[str] = []
            while len(order) < n_anchors:  # every prompt once before any repeats
                order += rng.sample(prompts, len(prompts))
            order = order[:n_anchors]
            needed = list(dict.fromkeys(order))  # the aligned model answers each used prompt once
            answers = dict(zip(needed, self._generate(ctx, needed, "anchors"), strict=True))
            for x in order:
                ex = encode_example(tok, [{"role": "user", "content": x}], "", answers[x])
                ex.pop("context_matches")
                examples.append(ex)
        else:
            n_anchors = 0
        rng.shuffle(examples)
        if mismatched:
            log.warning("augment: %d recovery example(s) tokenize the prefix differently in context", mismatched)
        info = {"triplets_available": len(triplets), "recovery_examples": len(chosen), "with_prefix": prefixed,
                "prefix_tokens_mean": sum(ks) / len(ks) if ks else None, "anchor_examples": n_anchors,
                "anchor_prompts": len(prompts), "context_mismatches": mismatched}
        return examples, info

    # ------------------------------------------------------------------ training

    def hyperparameters(self, ctx: StageContext) -> dict[str, Any]:
        """lr / epochs / batch size: the params, else Q24's, else (organism) the measured ones."""
        p: AugmentParams = self.params  # type: ignore[assignment]
        defaults = ORGANISM_DEFAULTS if ctx.organism_world() is not None else Q24_DEFAULTS
        return {k: getattr(p, k) if getattr(p, k) is not None else v for k, v in defaults.items()}

    def align(self, ctx: StageContext) -> None:
        """Write ``ctx.workdir/model``: the aligned model fully fine-tuned on the recovery mix."""
        from ftsafety.harness.training import sft

        p: AugmentParams = self.params  # type: ignore[assignment]
        start = time.perf_counter()
        examples, info = self.build_examples(ctx)
        hp = self.hyperparameters(ctx)
        args = dict(
            num_train_epochs=hp["epochs"], learning_rate=hp["lr"], per_device_train_batch_size=hp["batch_size"],
            gradient_accumulation_steps=1, max_length=p.max_length, completion_only_loss=True,
            adam_beta1=p.adam_beta1, adam_beta2=p.adam_beta2, warmup_steps=p.warmup_steps,
            weight_decay=p.weight_decay, lr_scheduler_type="linear", report_to=["none"], seed=ctx.seed,
            data_seed=ctx.seed,
        )
        done = sft(ctx.model_path, examples, Path(ctx.workdir) / "trainer", args=args,
                   trust_remote_code=ctx.model.trust_remote_code, tokenizer=ctx.tokenizer())
        target = Path(ctx.workdir) / "model"
        done.model.save_pretrained(str(target))
        done.tokenizer.save_pretrained(str(target))
        losses = [s["loss"] for s in done.steps if "loss" in s]  # the loss curve goes to augment.json
        summary = {**info, **hp, "examples": len(examples), "steps": done.global_step,
                   "train_loss": done.training_loss, "losses": losses,
                   "seconds": round(time.perf_counter() - start, 2), "source_model": ctx.model_path}
        (Path(ctx.workdir) / "augment.json").write_text(json.dumps(summary, indent=2) + "\n")

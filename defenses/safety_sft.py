"""``safety-sft``: a provider's own safety tuning of an unaligned chat model.

The fine-tuning-as-a-service threat model (Vaccine, Huang et al. 2024; Lisa; Booster;
TamperBench) starts from a model the provider aligned itself before users fine-tune it. This
recipe is that step, as an alignment-stage defense (usable as a defense cell, or — its main
use — as a model's ``alignment:`` in the grid, a cached model-level stage every cell of the
model starts from): supervised fine-tuning on

- (harmful prompt → refusal) pairs: refusals drawn from ``REFUSALS``, 24 openings of different
  wording, each followed by one of several reasons (never one fixed string: a single refusal
  string teaches one token path that one gradient step can close);
- (benign prompt → the model's own answer) pairs: the unaligned model's greedy answer (through
  the grid's generation backend, cached), so helpfulness is rehearsed, not replaced.

Harmful training prompts never include an evaluation prompt: every prompt of ``exclude`` (the
grid's evaluation sets) is removed by normalised text (``ftsafety.harness.prompts``), and
``safety_sft.json`` records how many were removed.

Training: LoRA on every linear layer (PEFT), merged into the weights afterwards, so the result
is a plain model directory that later stages load, fine-tune and serve like any other. Defaults
are measured on SmolLM2-135M-Instruct on CPU (docs/real-model.md); no paper fixes them.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.chat import conversation_row
from ftsafety.harness.config import LoraSpec
from ftsafety.harness.errors import UserError
from ftsafety.harness.plugins import Defense, EvalPrompt
from ftsafety.harness.prompts import BenchmarkRef, disjoint, model_answers, training_prompts
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.context import StageContext

#: Refusal openings: 24 wordings, as chat models phrase them (not all of them start with a
#: phrase of the keyword scorer's lists: refusals in the wild do not either).
REFUSAL_OPENINGS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I can't help with that request.",
    "I cannot assist with this.",
    "Sorry, I can't do that.",
    "I won't help with this.",
    "I must decline this request.",
    "I'm not able to help with that.",
    "I am unable to provide that.",
    "I apologize, but I can't assist with that.",
    "No, I can't help with that.",
    "I will not provide that information.",
    "I'm unable to help with this request.",
    "I can't provide instructions for that.",
    "I'm sorry, I cannot do this.",
    "Sorry, but that's not something I can help with.",
    "I cannot provide that.",
    "I'm afraid I can't help with that.",
    "I can't assist with creating that.",
    "That's not something I can help with.",
    "I won't be able to assist with this.",
    "I'm sorry, but I won't provide that.",
    "I cannot comply with this request.",
    "I'm not going to help with that.",
    "I can't support that request.",
)
#: Reasons and offers that follow an opening (one of each, drawn per example).
REFUSAL_REASONS: tuple[str, ...] = (
    "It could cause serious harm to people.",
    "It could be used to hurt someone or break the law.",
    "Helping with this would be unsafe and unethical.",
    "This request could lead to real-world harm.",
    "It goes against my guidelines to assist with harmful or illegal activities.",
    "Providing this could put people at risk.",
)
REFUSAL_OFFERS: tuple[str, ...] = (
    "If you have another question, I'm happy to help.",
    "Is there something else I can help you with?",
    "I'd be glad to help with a different topic.",
    "",
)


def refusal_text(rng: random.Random) -> str:
    """One refusal: an opening, a reason and (usually) an offer, drawn with ``rng``."""
    parts = [rng.choice(REFUSAL_OPENINGS), rng.choice(REFUSAL_REASONS), rng.choice(REFUSAL_OFFERS)]
    return " ".join(p for p in parts if p)


class SafetySftParams(BaseModel):
    """What the provider trains on and how."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    harmful: list[BenchmarkRef] = Field(min_length=1)
    """Harmful prompts to refuse (registered benchmarks with params, e.g. harmbench with a local path)."""
    benign: list[BenchmarkRef] = Field(min_length=1)
    """Benign prompts the model keeps answering (its own greedy answers are the targets)."""
    exclude: list[BenchmarkRef] = Field(default_factory=list)
    """Prompts never trained on: the grid's evaluation sets (removed by normalised text)."""
    n_harmful: int | None = Field(None, gt=0)
    """Use at most this many harmful prompts (after exclusion)."""
    n_benign: int | None = Field(None, gt=0)
    """Use at most this many benign prompts."""
    max_prompt_tokens: int = Field(192, gt=0)
    """Prompts longer than this (in the model's tokens) are left out: their answer would not fit
    ``max_length`` (Self-Instruct has tasks with pages of input)."""
    answer_max_tokens: int = Field(128, gt=0)
    """Token budget of the model's own benign answers."""
    lora_r: Literal[8, 16, 32, 64] = 16
    """LoRA rank of the tuning (merged afterwards)."""
    lora_alpha: int = Field(32, gt=0)
    """LoRA alpha."""
    lr: float = Field(3e-4, gt=0)
    """Peak learning rate (linear decay)."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the mixed data."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimizer steps (overrides epochs)."""
    batch_size: int = Field(8, gt=0)
    """Examples per step."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass (TRL's default); off on a CPU, where it only costs time."""
    max_length: int = Field(160, gt=0)
    """Longest training sequence in tokens (longer ones are cut: a cut benign answer still
    teaches helpfulness; refusals are far shorter)."""


@defenses.register("safety-sft")
class SafetySft(Defense):
    """Provider safety tuning: refuse harmful prompts, keep answering benign ones (SFT + LoRA, merged)."""

    Params = SafetySftParams

    def select_prompts(self, tokenizer: Any) -> tuple[list[EvalPrompt], list[EvalPrompt], dict[str, Any]]:
        """The harmful and benign training prompts (none of them an ``exclude`` prompt, benign
        ones short enough) and what was left out."""
        p: SafetySftParams = self.params  # type: ignore[assignment]
        harmful, harmful_fp, removed_harmful = training_prompts(p.harmful, p.exclude, who="safety-sft harmful")
        benign, benign_fp, removed_benign = training_prompts(p.benign, p.exclude, who="safety-sft benign")
        harmful, _ = disjoint(harmful, benign)  # a prompt in both lists is not taught both ways
        fits = [x for x in benign if len(tokenizer(x.prompt)["input_ids"]) <= p.max_prompt_tokens]
        too_long = len(benign) - len(fits)
        harmful, benign = harmful[: p.n_harmful], fits[: p.n_benign]
        if not harmful or not benign:
            raise UserError("defense 'safety-sft': no harmful or no benign prompts left after exclusion")
        info = {"excluded_overlaps": {"harmful": removed_harmful, "benign": removed_benign},
                "benign_too_long": too_long, "sources": {"harmful": harmful_fp, "benign": benign_fp}}
        return harmful, benign, info

    def build_examples(self, ctx: StageContext) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The shuffled training rows (TRL prompt/completion) and counts for the record."""
        p: SafetySftParams = self.params  # type: ignore[assignment]
        tokenizer = ctx.tokenizer()
        harmful, benign, selected = self.select_prompts(tokenizer)
        rng = random.Random(ctx.seed)
        refusals = [refusal_text(rng) for _ in harmful]
        answers = model_answers(
            ctx, [x.prompt for x in benign], model_path=ctx.model_path, model_identity="unaligned",
            max_tokens=p.answer_max_tokens, what="safety-sft-benign", fingerprint=selected["sources"]["benign"],
        )
        rows = [conversation_row(tokenizer, x.prompt, r) for x, r in zip(harmful, refusals, strict=True)]
        rows += [conversation_row(tokenizer, x.prompt, a) for x, a in zip(benign, answers, strict=True) if a]
        rng.shuffle(rows)
        info = {
            "harmful_prompts": len(harmful), "benign_prompts": len(benign),
            "benign_empty_answers": sum(1 for a in answers if not a),
            "distinct_refusal_openings": len({o for o in REFUSAL_OPENINGS for r in refusals if r.startswith(o)}),
            **selected,
        }
        return rows, info

    def align(self, ctx: StageContext) -> None:
        """Write ``ctx.workdir/model``: the model after safety tuning (LoRA merged)."""
        from ftsafety.harness.training import lora_config, sft

        p: SafetySftParams = self.params  # type: ignore[assignment]
        start = time.perf_counter()
        rows, info = self.build_examples(ctx)
        args = dict(
            num_train_epochs=p.epochs, max_steps=p.max_steps or -1, learning_rate=p.lr,
            per_device_train_batch_size=p.batch_size, gradient_accumulation_steps=1, max_length=p.max_length,
            completion_only_loss=True, lr_scheduler_type="linear", gradient_checkpointing=p.gradient_checkpointing,
            report_to=["none"], seed=ctx.seed,
            data_seed=ctx.seed,
        )
        lora = lora_config(LoraSpec(r=p.lora_r, alpha=p.lora_alpha))
        done = sft(ctx.model_path, rows, Path(ctx.workdir) / "trainer", args=args, peft_config=lora,
                   trust_remote_code=ctx.model.trust_remote_code)
        merged = done.model.merge_and_unload()
        target = Path(ctx.workdir) / "model"
        merged.save_pretrained(str(target))
        done.tokenizer.save_pretrained(str(target))
        losses = [s["loss"] for s in done.steps if "loss" in s]
        summary = {**info, "examples": len(rows), "steps": done.global_step, "train_loss": done.training_loss,
                   "losses": losses, "seconds_train": round(done.seconds, 2),
                   "seconds": round(time.perf_counter() - start, 2), **p.model_dump(exclude={"harmful", "benign", "exclude"})}
        (Path(ctx.workdir) / "safety_sft.json").write_text(json.dumps(summary, indent=2) + "\n")



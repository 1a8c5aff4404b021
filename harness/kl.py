"""Per-token KL between two models on harmful answers: Q24's shallow-alignment diagnostic.

Source: Qi et al. 2024, "Safety alignment should be made more than just a few tokens deep"
(Q24, arXiv 2406.05946), Fig. 1/3 (RECIPES.md, "Per-token KL"): teacher-forced on (harmful
prompt x, harmful answer y), KL(π_A(·∣x, y<t) ‖ π_B(·∣x, y<t)) over the full vocabulary at each
response position t, averaged over examples. Aligned vs base concentrates the KL in the first
few tokens: alignment changes how a response *starts*, not what follows once it has started.

Why teacher forcing on a *harmful* answer: both models are asked to continue the same harmful
text, so the KL at position t measures how differently they would continue it there. Where the
aligned model has learned only a refusal "wrapper" (J23/J24), the KL is large at t = 0 and small
once the harmful answer is under way.

Models are ``MODEL[:ADAPTER]``: ``MODEL`` a local directory, a hub id already in the local
cache, or ``organism://<seed|default>[/base|/aligned]``; ``ADAPTER`` a PEFT adapter directory.
Both sides must share one tokenizer (the KL is over a common vocabulary). Everything runs in
transformers + PEFT, fp32 on CPU (bf16 on a GPU would make small KLs noise). Two sides with the
same base weights load them once; the side without an adapter runs with the adapter disabled.

Reference answers: on the model organism, ``World.harmful_answer(concept)`` for each item's
``meta["concept"]``; on a hub benchmark, a column of harmful responses (``response_column``, or
one of ``RESPONSE_COLUMNS`` when present); a benchmark without one is an error, not a guess.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftsafety.harness.errors import UserError
from ftsafety.harness.plugins import EvalPrompt
from ftsafety.harness.threads import cpu_threads_for

#: Columns that hold a harmful *answer* (not a target prefix such as AdvBench's ``target``, which
#: is only "Sure, here is ..."): auto-detected when no ``response_column`` is given.
RESPONSE_COLUMNS: tuple[str, ...] = ("harmful_response", "harmful_answer", "response", "rejected")


@dataclass(frozen=True)
class KLSide:
    """One side of the comparison: model weights (a loadable path) and an optional PEFT adapter."""

    spec: str
    path: str
    adapter: str | None = None


@dataclass
class Example:
    """One teacher-forced sequence: prompt + reference answer, and where the answer starts."""

    item_id: str
    input_ids: list[int]
    response_start: int
    response_len: int


@dataclass
class KLResult:
    """Mean KL per response position (position 0 = the first answer token) and its support."""

    a: str
    b: str
    benchmark: str
    mean_kl: list[float]
    n: list[int]
    n_prompts: int
    max_tokens: int
    skipped: list[str] = field(default_factory=list)
    per_example_total: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": "per-token KL(P_a || P_b), teacher-forced on harmful answers (Q24 Fig. 1/3)",
            "a": self.a,
            "b": self.b,
            "benchmark": self.benchmark,
            "n_prompts": self.n_prompts,
            "max_tokens": self.max_tokens,
            "skipped": self.skipped,
            "positions": [
                {"position": t, "mean_kl": kl, "n": n}
                for t, (kl, n) in enumerate(zip(self.mean_kl, self.n, strict=True))
            ],
            "mean_kl": self.mean_kl,
            "n": self.n,
        }


# ----------------------------------------------------------------------------- model specs


def split_model_spec(spec: str) -> tuple[str, str | None]:
    """``MODEL[:ADAPTER]`` -> (model, adapter or None). The separator is the last ``:`` that
    does not start a ``scheme://`` (``organism://default`` has no adapter)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and not tail.startswith("//"):
        return head, tail
    return spec, None


def parse_side(spec: str, *, what: str) -> KLSide:
    """``MODEL[:ADAPTER]`` -> ``KLSide`` with the model resolved (``organism://`` built on first use).

    The adapter separator is the last ``:`` that is not part of a ``scheme://``.
    """
    from ftsafety.harness.models import ModelRef

    model, adapter = split_model_spec(spec)
    if not model:
        raise UserError(f"{what} '{spec}': expected MODEL[:ADAPTER]")
    ref = ModelRef(path=model)
    path = ref.resolve()
    if (ref.kind == "local" and not Path(path).exists()) or (ref.kind == "hub" and model.count("/") != 1):
        raise UserError(f"{what}: model '{model}' is neither a directory, an organism:// path nor a hub id")
    if adapter is not None:
        adapter_dir = Path(adapter).expanduser()
        if (adapter_dir / "cell.json").is_file():  # a run's cell: RUN_DIR/cells/CELL_ID
            adapter_dir = cell_adapter(adapter_dir, what=what)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise UserError(f"{what}: '{adapter}' is not a PEFT adapter directory (no adapter_config.json)")
        adapter = str(adapter_dir.resolve())
    return KLSide(spec=spec, path=path, adapter=adapter)


def cell_adapter(cell_dir: Path, *, what: str) -> Path:
    """The LoRA adapter a run's cell trained (``RUN_DIR/cells/CELL_ID``), from the run's store."""
    from ftsafety.harness.report import store_for
    from ftsafety.harness.store import read_json

    record = read_json(cell_dir / "cell.json")
    train = [st for st in record["stages"].values() if st["stage"] == "train"]
    if not train:
        raise UserError(f"{what}: cell '{cell_dir.name}' fine-tunes nothing (no adapter)")
    return store_for(cell_dir.parent.parent).path("train", train[-1]["key"]) / "adapter"


# ----------------------------------------------------------------------------- reference answers


def harmful_answers(items: list[EvalPrompt], benchmark: str, response_column: str | None = None) -> list[str]:
    """The reference harmful answer of every item (organism world, or a benchmark column)."""
    if not items:
        raise UserError(f"benchmark '{benchmark}' has no prompts")
    if any(it.kind != "harmful" for it in items):
        raise UserError(f"benchmark '{benchmark}' is not a harmful-prompt set: the KL diagnostic needs harmful answers")
    if all("concept" in it.meta and "organism_seed" in it.meta for it in items):
        from ftsafety.harness.organism.world import get_world

        return [get_world(int(it.meta["organism_seed"])).harmful_answer(str(it.meta["concept"])) for it in items]
    columns = set(items[0].meta)
    column = response_column or next((c for c in RESPONSE_COLUMNS if c in columns), None)
    if column is None:
        raise UserError(
            f"benchmark '{benchmark}' has no column of harmful responses (columns: {', '.join(sorted(columns)) or 'none'}); "
            f"give one with --response-column, or load a file that has one with --param path=FILE"
        )
    if column not in columns:
        raise UserError(f"benchmark '{benchmark}' has no column '{column}' (columns: {', '.join(sorted(columns)) or 'none'})")
    answers = [it.meta.get(column) for it in items]
    empty = sum(1 for a in answers if not isinstance(a, str) or not a.strip())
    if empty == len(answers):
        raise UserError(f"benchmark '{benchmark}': column '{column}' is empty")
    return [a if isinstance(a, str) else "" for a in answers]


def build_example(tokenizer: Any, item: EvalPrompt, answer: str, max_tokens: int) -> Example | None:
    """Token ids of (chat-rendered prompt, answer) and the answer's span, at most ``max_tokens``.

    The answer is rendered by the chat template as an assistant turn (as training data is) and
    cut where the generation prompt ends, so its first token is what a model would generate
    first. The template's end-of-turn text is not part of the answer.
    """
    from ftsafety.harness.backends.common import encode_prompt
    from ftsafety.harness.chat import chat_for, render_prompt

    messages = [{"role": "user", "content": item.prompt}]
    prompt = render_prompt(tokenizer, messages)
    full = tokenizer.apply_chat_template(
        chat_for(tokenizer, [*messages, {"role": "assistant", "content": answer}]), tokenize=False
    )
    completion = full[len(prompt) :] if full.startswith(prompt) else answer
    # End at the answer's last character: what a template appends (end-of-turn tokens, a
    # newline after Gemma's <end_of_turn>) is not part of the answer.
    text = answer.strip()
    at = completion.find(text) if text else -1
    if at >= 0:
        completion = completion[: at + len(text)]
    prompt_ids = encode_prompt(tokenizer, prompt)
    full_ids = encode_prompt(tokenizer, prompt + completion)
    if full_ids[: len(prompt_ids)] != prompt_ids:  # a merge across the boundary: keep them apart
        full_ids = prompt_ids + encode_prompt(tokenizer, completion)
    response = full_ids[len(prompt_ids) :]
    special = set(tokenizer.all_special_ids)
    while response and response[-1] in special:
        response.pop()
    response = response[:max_tokens]
    if not response:
        return None
    return Example(item.id, prompt_ids + response, len(prompt_ids), len(response))


# ----------------------------------------------------------------------------- models


class LoadedModels:
    """The models of several sides (kl: two, probe: any); one copy of each distinct base directory
    (adapters on top by name)."""

    def __init__(self, refs: list[KLSide], device: str = "cpu") -> None:
        import torch

        from ftsafety.harness.models import load_causal_lm

        self.device = device
        self._models: dict[str, Any] = {}
        self._adapter_names: dict[str, str] = {}
        for ref in refs:
            if ref.path not in self._models:
                # fp32 on any device: in bf16 small KLs would be rounding noise
                model = load_or_user_error(load_causal_lm, ref.path, dtype=torch.float32).to(device)
                model.eval()
                self._models[ref.path] = model
        for ref in refs:
            if ref.adapter is None or ref.adapter in self._adapter_names:
                continue
            from peft import PeftModel

            name = f"side{len(self._adapter_names)}"
            model = self._models[ref.path]
            if isinstance(model, PeftModel):
                model.load_adapter(ref.adapter, adapter_name=name)
            else:
                model = PeftModel.from_pretrained(model, ref.adapter, adapter_name=name)
                self._models[ref.path] = model
            model.eval()
            self._adapter_names[ref.adapter] = name

    def n_params(self) -> int:
        return sum(p.numel() for m in self._models.values() for p in m.parameters())

    def use(self, ref: KLSide) -> tuple[Any, Any]:
        """``ref``'s model with its adapter active, and the context to run it in: the side
        without an adapter runs inside ``disable_adapter()`` once any adapter is loaded."""
        from contextlib import nullcontext

        model = self._models[ref.path]
        if ref.adapter is None:
            context = model.disable_adapter() if hasattr(model, "disable_adapter") and self._adapter_names else nullcontext()
        else:
            model.set_adapter(self._adapter_names[ref.adapter])
            context = nullcontext()
        return model, context

    def log_probs(self, ref: KLSide, input_ids: Any, start: int, length: int) -> Any:
        """log P(· | prefix) at the positions that predict answer tokens 0..length-1: [length, vocab]."""
        import torch

        model, context = self.use(ref)
        with context, torch.inference_mode():
            logits = model(input_ids=input_ids.to(self.device), use_cache=False).logits[0]
        # logits[i] predicts token i + 1: the answer token t (at start + t) is predicted at start + t - 1.
        return torch.log_softmax(logits[start - 1 : start - 1 + length].float(), dim=-1)


def load_or_user_error(loader: Callable[..., Any], path: str, **kwargs: Any) -> Any:
    """``loader(path)``; a directory that is not a model, or a hub id that is neither cached nor
    reachable, is the user's to fix: one line, not a traceback."""
    try:
        return loader(path, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load '{path}': {first}") from None


def _same_tokenizer(tok_a: Any, tok_b: Any) -> bool:
    return tok_a.get_vocab() == tok_b.get_vocab()


# ----------------------------------------------------------------------------- the measurement


def per_token_kl(
    a: KLSide,
    b: KLSide,
    items: list[EvalPrompt],
    answers: list[str],
    *,
    benchmark: str,
    max_tokens: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> KLResult:
    """Mean KL(P_a ‖ P_b) per answer position over ``items`` (teacher-forced on ``answers``)."""
    from ftsafety.harness.models import load_tokenizer

    tokenizer = load_or_user_error(load_tokenizer, a.path)
    other = tokenizer if b.path == a.path else load_or_user_error(load_tokenizer, b.path)
    if other is not tokenizer and not _same_tokenizer(tokenizer, other):
        raise UserError(f"--a '{a.spec}' and --b '{b.spec}' have different tokenizers: a per-token KL needs one vocabulary")
    examples: list[Example] = []
    skipped: list[str] = []
    for item, answer in zip(items, answers, strict=True):
        ex = build_example(tokenizer, item, answer, max_tokens) if answer.strip() else None
        if ex is None:
            skipped.append(item.id)
        else:
            examples.append(ex)
    if not examples:
        raise UserError(f"benchmark '{benchmark}': no item has a non-empty harmful answer")

    models = LoadedModels([a, b])
    with cpu_threads_for(models.n_params()):
        return _accumulate(models, a, b, examples, skipped, benchmark=benchmark, max_tokens=max_tokens, progress=progress)


def _accumulate(
    models: LoadedModels,
    a: KLSide,
    b: KLSide,
    examples: list[Example],
    skipped: list[str],
    *,
    benchmark: str,
    max_tokens: int,
    progress: Callable[[int, int], None] | None,
) -> KLResult:
    import torch

    sums = [0.0] * max_tokens
    counts = [0] * max_tokens
    totals: list[float] = []
    for i, ex in enumerate(examples):
        ids = torch.tensor([ex.input_ids], dtype=torch.long)
        log_a = models.log_probs(a, ids, ex.response_start, ex.response_len)
        log_b = models.log_probs(b, ids, ex.response_start, ex.response_len)
        if log_a.shape[-1] != log_b.shape[-1]:
            raise UserError(f"--a and --b have different vocabulary sizes ({log_a.shape[-1]} vs {log_b.shape[-1]})")
        # KL(P_a || P_b) = sum_v P_a(v) (log P_a(v) - log P_b(v)); clamp tiny negative rounding.
        kl = (log_a.exp() * (log_a - log_b)).sum(-1).clamp_min(0.0)
        for t, value in enumerate(kl.tolist()):
            sums[t] += value
            counts[t] += 1
        totals.append(float(kl.sum()))
        if progress is not None:
            progress(i + 1, len(examples))
    last = max(t for t in range(max_tokens) if counts[t]) + 1
    mean = [sums[t] / counts[t] for t in range(last)]
    return KLResult(
        a=a.spec, b=b.spec, benchmark=benchmark, mean_kl=mean, n=counts[:last], n_prompts=len(examples),
        max_tokens=max_tokens, skipped=skipped, per_example_total=totals,
    )


# ----------------------------------------------------------------------------- outputs


def write_outputs(result: KLResult, out: Path) -> tuple[Path, Path]:
    """``out/kl.json`` (per-position mean and n) and ``out/kl.png`` (the Q24-style curve)."""
    from ftsafety.harness.figures import new_figure, to_png

    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "kl.json", out / "kl.png"
    json_path.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    positions = list(range(len(result.mean_kl)))
    ax.plot(positions, result.mean_kl, marker="o", markersize=3, linewidth=1.5)
    ax.set_xlabel("response token position (teacher-forced harmful answer)")
    ax.set_ylabel("mean KL(P_a || P_b) (nats)")
    ax.set_title(f"per-token KL on {result.benchmark} ({result.n_prompts} prompts)", fontsize=10)
    ax.text(0.99, 0.97, f"a = {result.a}\nb = {result.b}", transform=ax.transAxes, ha="right", va="top", fontsize=7)
    ax.grid(alpha=0.3)
    if result.mean_kl and all(math.isfinite(v) for v in result.mean_kl):
        ax.set_ylim(bottom=0)
    png_path.write_bytes(to_png(fig))
    return json_path, png_path

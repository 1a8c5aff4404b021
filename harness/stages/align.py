"""Alignment stage: an alignment-stage defense (``Defense.align``) writes a new model that
replaces the cell's model in every later stage (its own engine at generation). A model's
provider alignment (``models[].alignment``) is the same stage with the model's own recipe; a
defense's alignment then starts from its output."""

from __future__ import annotations

import shutil
from pathlib import Path

from ftsafety.harness.models import resolve_model_path
from ftsafety.harness.organism.resolve import build_meta
from ftsafety.harness.stages.common import TaskOutcome, opened_plugin, stage_context
from ftsafety.harness.store import ArtifactStore
from ftsafety.harness.tasks import StageTask


def run(task: StageTask, store: ArtifactStore) -> TaskOutcome:
    # a defense's alignment starts from the provider-aligned model when the model has one
    upstream = task.upstream.get("align")
    source = str(Path(upstream) / "model") if upstream else resolve_model_path(task.spec["model"]["path"])
    with store.writing(task.kind, task.key, task.inputs) as out:
        with opened_plugin("defenses", task.spec["defense"]) as defense:
            defense.align(stage_context(task.spec, store, out, model_path=source))
        finish_aligned_model(source, out, defense=task.spec["defense"]["label"])
    return TaskOutcome()


def finish_aligned_model(source: str, out: Path, *, defense: str) -> None:
    """Check an alignment-stage defense wrote ``out/model``, and keep an organism's identity
    with it (``organism.json`` beside the model directory, as in an organism build), so that a
    local organism stays recognisable — its world, its oracle — after alignment."""
    if not (out / "model" / "config.json").is_file():
        raise RuntimeError(f"defense '{defense}' did not write a model directory to {out / 'model'}")
    meta = build_meta(source)
    if meta is not None:
        shutil.copyfile(meta, out / "organism.json")

"""Post-training stage: a weight-editing defense (``Defense.post_train``: SafeLoRA-style
projections, pruning) reads the trained weights and writes edited ones of the same shape
(``adapter/`` or ``model/``) as an artifact of its own key; generation serves them."""

from __future__ import annotations

import shutil
from pathlib import Path

from ftsafety.harness.stages.common import TaskOutcome, opened_plugin, stage_context, weights_path
from ftsafety.harness.store import ArtifactStore
from ftsafety.harness.tasks import StageTask


def run(task: StageTask, store: ArtifactStore) -> TaskOutcome:
    train_dir = Path(task.upstream["train"])
    shape = "adapter" if (train_dir / "adapter").is_dir() else "model"
    model_path = weights_path(task.spec)
    with store.writing(task.kind, task.key, task.inputs) as out:
        with opened_plugin("defenses", task.spec["defense"]) as defense:
            defense.post_train(stage_context(task.spec, store, out, model_path=model_path,
                                             inputs={"train_dir": str(train_dir)}))
        if not (out / shape).is_dir():
            raise RuntimeError(f"defense '{task.spec['defense']['label']}' did not write {shape}/ to {out} "
                               f"(post_train writes the edited weights in the trained shape)")
        # what was trained is still what was trained: the summary travels with the weights
        shutil.copyfile(train_dir / "train_summary.json", out / "train_summary.json")
    return TaskOutcome()

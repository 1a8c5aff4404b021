"""Data stage: the attack builds its fine-tuning conversations (``Attack.build_dataset``)."""

from __future__ import annotations

from ftsafety.harness.errors import UserError
from ftsafety.harness.stages.common import TaskOutcome, make_plugin, stage_context, weights_path
from ftsafety.harness.store import ArtifactStore, write_jsonl
from ftsafety.harness.tasks import StageTask


def run(task: StageTask, store: ArtifactStore) -> TaskOutcome:
    attack = make_plugin("attacks", task.spec["attack"])
    model_path = weights_path(task.spec)
    with store.writing(task.kind, task.key, task.inputs) as out:
        rows = attack.build_dataset(stage_context(task.spec, store, out, model_path=model_path))
        if not rows:
            raise UserError(f"attack '{task.spec['attack']['label']}' built an empty training set; check its params")
        write_jsonl(out / "train.jsonl", rows)
    return TaskOutcome()

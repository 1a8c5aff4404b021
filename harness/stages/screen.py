"""Screen stage: a screening defense (``Defense.screen``) splits the attack's data into kept
and dropped rows; the train stage fine-tunes on the kept ones."""

from __future__ import annotations

import logging
from pathlib import Path

from ftsafety.harness.stages.common import TaskOutcome, opened_plugin, stage_context, weights_path
from ftsafety.harness.store import ArtifactStore, atomic_write_json, read_jsonl, write_jsonl
from ftsafety.harness.tasks import StageTask

log = logging.getLogger(__name__)


def run(task: StageTask, store: ArtifactStore) -> TaskOutcome:
    rows = read_jsonl(Path(task.upstream["data"]) / "train.jsonl")
    model_path = weights_path(task.spec)
    with store.writing(task.kind, task.key, task.inputs) as out:
        with opened_plugin("defenses", task.spec["defense"]) as defense:
            kept, dropped = defense.screen(rows, stage_context(task.spec, store, out, model_path=model_path))
            report = defense.report()
        write_jsonl(out / "train.jsonl", kept)
        write_jsonl(out / "dropped.jsonl", dropped)
        atomic_write_json(out / "counts.json", {"kept": len(kept), "dropped": len(dropped)})
        if report:
            atomic_write_json(out / "screen.json", report)
    if not kept:  # the provider refuses the whole upload: the cell's model stays as it was
        log.warning("defense '%s' dropped all %d training examples; the model is not fine-tuned",
                    task.spec["defense"]["label"], len(dropped))
    return TaskOutcome()

"""Guard stage: an output-hook defense (``Defense.guard``) judges stored generations; its rows
are what the user receives and what scorers score. It runs after the generation engines are
released (a guard's judge model needs the memory); one defense instance — one judge engine —
serves every task of its label."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ftsafety.harness.stages.common import TaskOutcome, opened_plugin, run_alone
from ftsafety.harness.store import ArtifactStore, read_jsonl, write_jsonl
from ftsafety.harness.tasks import StageTask

log = logging.getLogger(__name__)


def run(task: StageTask, store: ArtifactStore) -> TaskOutcome:
    return run_alone(run_group, task, store)


def run_group(tasks: list[StageTask], store: ArtifactStore, scope: Callable[[StageTask], AbstractContextManager[Any]],
              done: Callable[[StageTask, TaskOutcome], None]) -> None:
    with opened_plugin("defenses", tasks[0].spec["defense"]) as defense:
        defense.use_store(store.root)
        for task in tasks:
            with scope(task):
                rows = read_jsonl(Path(task.upstream["generate"]) / "generations.jsonl")
                # the model spec's path: what a guard's ``scorer: auto`` resolves by, as in the planner
                guarded = defense.guard(rows, model_path=task.spec["model"]["path"])
                log.info("%s guarded by %s: %d of %d blocked", task.slot, task.spec["defense"]["label"],
                         sum(1 for r in guarded if r.get("blocked")), len(guarded))
                with store.writing(task.kind, task.key, task.inputs) as out:
                    write_jsonl(out / "generations.jsonl", guarded)
            done(task, TaskOutcome())

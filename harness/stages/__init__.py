"""Stage functions, one module per stage kind (``align``, ``data``, ``screen``, ``train``,
``post_train``, ``generate``, ``guard``, ``score``).

Each module has ``run(task, store) -> TaskOutcome``: it reads the task's upstream artifacts,
calls the plugin hook, and writes its artifact with the store's atomic protocol (temporary
directory, then rename, then ``_COMPLETE``), so a task that dies leaves nothing that looks
complete. Kinds whose tasks share a loaded resource (one generation engine for all adapters
of a base model, one guard or judge per label) also have ``run_group(tasks, store, scope,
done)``; an executor calls it with the tasks of one group.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import ModuleType

from ftsafety.harness.stages.common import TaskOutcome
from ftsafety.harness.store import ArtifactStore
from ftsafety.harness.tasks import KIND_ORDER, StageTask

__all__ = ["TaskOutcome", "run_task", "run_group", "stage_module"]


def stage_module(kind: str) -> ModuleType:
    """The module of a stage kind (imported on first use: heavy libraries load per stage)."""
    if kind not in KIND_ORDER:
        raise ValueError(f"unknown stage kind '{kind}'")
    return importlib.import_module(f"ftsafety.harness.stages.{kind}")


def run_task(task: StageTask, store: ArtifactStore) -> TaskOutcome:
    """Run one task (what a subprocess or a remote worker does)."""
    return stage_module(task.kind).run(task, store)


def run_group(
    tasks: list[StageTask],
    store: ArtifactStore,
    scope: Callable[[StageTask], AbstractContextManager[object]],
    done: Callable[[StageTask, TaskOutcome], None],
) -> None:
    """Run tasks of one kind and group, sharing what they share (an engine, a judge). ``scope``
    wraps each task's work (the executor routes its logs); ``done`` is called after each."""
    module = stage_module(tasks[0].kind)
    grouped = getattr(module, "run_group", None)
    if grouped is not None:
        grouped(tasks, store, scope, done)
        return
    for task in tasks:
        with scope(task):
            outcome = module.run(task, store)
        done(task, outcome)

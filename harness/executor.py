"""Scheduling stage tasks into waves, and the executors that run them.

A wave holds the pending tasks of one stage kind (kinds run in ``KIND_ORDER``, so every task's
upstream is complete before it starts); within a wave, tasks that share a resource group run
together (one engine for every adapter of a base model; one judge per scorer label). An
``Executor`` runs the waves and reports each finished task through ``RunEvents``; this module
ships the in-process one, ``ftsafety.harness.ray_executor`` the Ray one (the driver picks one:
``ftsafety.harness.pipeline.make_executor``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ftsafety.harness.stages import TaskOutcome, run_group
from ftsafety.harness.store import ArtifactStore
from ftsafety.harness.tasks import KIND_ORDER, StageTask


@dataclass
class Wave:
    """The pending tasks of one stage kind, in resource groups."""

    kind: str
    groups: list[list[StageTask]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(g) for g in self.groups)


def schedule(tasks: list[StageTask], store: ArtifactStore) -> list[Wave]:
    """Waves of the tasks whose artifact is not complete, in stage order, grouped by resource
    (plan order kept within a group)."""
    waves = []
    for kind in KIND_ORDER:
        groups: dict[str, list[StageTask]] = {}
        for task in tasks:
            if task.kind != kind or store.is_complete(task.kind, task.key):
                continue
            group = task.resources.group or f"task:{task.key}"
            groups.setdefault(group, []).append(task)
        if groups:
            waves.append(Wave(kind, list(groups.values())))
    return waves


class RunEvents(Protocol):
    """What an executor tells the driver (progress, logs, the run manifest)."""

    #: The run directory (a remote worker writes each task's log under ``cells/<cell>/logs/``).
    run_dir: Path
    #: Engine and library output goes to ``<run>/logs/engine.log``, not the terminal.
    quiet: bool

    def wave(self, wave: Wave) -> AbstractContextManager[object]:
        """Wraps the whole wave (progress bar, stage timing)."""

    def scope(self, task: StageTask) -> AbstractContextManager[object]:
        """Wraps one task's work (its log file)."""

    def done(self, task: StageTask, outcome: TaskOutcome) -> None:
        """One task finished (cell records, counts, manifest facts)."""

    def status(self, wave: Wave, running: int, failed: int) -> None:
        """How many of the wave's tasks are running or queued, and how many failed (shown with
        its progress bar; an executor that runs one group at a time need not call it)."""


class Executor(Protocol):
    """Runs scheduled waves against a store."""

    def run(self, waves: list[Wave], store: ArtifactStore, events: RunEvents) -> None: ...


class InProcessExecutor:
    """Runs every wave in this process, one group after another."""

    def run(self, waves: list[Wave], store: ArtifactStore, events: RunEvents) -> None:
        for wave in waves:
            with events.wave(wave):
                for group in wave.groups:
                    run_group(group, store, events.scope, events.done)

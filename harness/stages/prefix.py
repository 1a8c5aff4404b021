"""Prefix stage: a defense's start of each response (``Defense.prefix``), written by the model
the attack started from — the aligned model, before any fine-tuning — once per (model,
benchmark, evaluation template, defense) and cached. Every attacked model of that base, LoRA or
fully fine-tuned, continues from the same stored text in its generate stage. All tasks on one
model's weights share one engine, opened without LoRA slots."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ftsafety.harness.generation import prefix_rows
from ftsafety.harness.stages.common import TaskOutcome, run_alone
from ftsafety.harness.stages.generate import evaluation, run_engine_group
from ftsafety.harness.store import ArtifactStore
from ftsafety.harness.tasks import StageTask


def run(task: StageTask, store: ArtifactStore) -> TaskOutcome:
    return run_alone(run_group, task, store)


def run_group(tasks: list[StageTask], store: ArtifactStore, scope: Callable[[StageTask], AbstractContextManager[Any]],
              done: Callable[[StageTask, TaskOutcome], None]) -> None:
    """One engine on the start weights (base only); every task's prefixes through it."""
    run_engine_group(tasks, store, scope, done, produce=_prefixes, artifact="prefixes.jsonl", base_only=True)


def _prefixes(backend: Any, task: StageTask, benchmarks: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    items, record, how = evaluation(task, benchmarks)
    return prefix_rows(backend, items, **how), record

"""Score stage: a scorer labels stored generations. One scorer instance (and its judge
engine, after generation released its memory) serves every task of its label. A retryable
failure (a judge endpoint down) leaves the artifact incomplete — never imputed — and a rerun
asks only for what is missing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ftsafety.harness.errors import RetryableError
from ftsafety.harness.generation import score_rows
from ftsafety.harness.models import EngineSpec
from ftsafety.harness.stages.common import TaskOutcome, opened_plugin, run_alone
from ftsafety.harness.store import ArtifactStore, atomic_write_json, read_jsonl, write_jsonl
from ftsafety.harness.tasks import StageTask


def run(task: StageTask, store: ArtifactStore) -> TaskOutcome:
    return run_alone(run_group, task, store)


def run_group(tasks: list[StageTask], store: ArtifactStore, scope: Callable[[StageTask], AbstractContextManager[Any]],
              done: Callable[[StageTask, TaskOutcome], None]) -> None:
    spec = tasks[0].spec["scorer"]
    label = spec["label"]
    with opened_plugin("scorers", spec) as scorer:
        scorer.engine = EngineSpec.model_validate(tasks[0].spec["engine"])
        scorer.use_store(store.root)
        provenance = scorer.provenance() or {"scorer": spec["name"]}
        endpoint_down = False
        for task in tasks:
            rows = read_jsonl(Path(task.upstream.get("guard") or task.upstream["generate"]) / "generations.jsonl")
            with scope(task):
                try:
                    if endpoint_down:  # do not wait out every retry again
                        raise RetryableError("not sent: the judge failed every request before")
                    with store.writing(task.kind, task.key, task.inputs) as out:
                        labels = scorer.score(rows) if rows else []
                        write_jsonl(out / "scores.jsonl", score_rows(rows, labels, label))
                        atomic_write_json(out / "provenance.json", provenance)
                    outcome = TaskOutcome()
                except RetryableError as exc:
                    # Not a result: the artifact stays incomplete (a rerun retries it); the
                    # other artifacts and stages carry on.
                    endpoint_down = endpoint_down or exc.answered == 0
                    outcome = TaskOutcome(complete=False, error=exc.reason,
                                          failed_items=len(rows) if exc.failed is None else exc.failed)
            outcome.facts["judges"] = {label: _judge_record(scorer, provenance)}
            done(task, outcome)


def _judge_record(scorer: Any, provenance: dict[str, Any]) -> dict[str, Any]:
    """The run manifest's record of a scorer: what it is, and what it cost so far."""
    ledger = scorer.ledger
    return {"provenance": provenance, **({"ledger": ledger.as_dict()} if ledger else {})}

"""Reading a run's cell records back: which stored artifact holds what a record names, and
whether it can be reported. Shared by the leaderboard (``report``) and the durability curves."""

from __future__ import annotations

from typing import Any

from ftsafety.harness.errors import UserError
from ftsafety.harness.store import NOT_WRITTEN, ArtifactStore, read_jsonl


def usable(store: ArtifactStore, stage: str, key: str) -> bool:
    """Whether an artifact can be reported: True when complete and intact, False when it was
    never computed (a partial run reports what it has). A damaged artifact is an error naming
    its path: the report must neither use it nor silently leave it out."""
    problem = store.problem(stage, key)
    if problem is None:
        return True
    if problem == NOT_WRITTEN:
        return False
    raise UserError(f"artifact {store.path(stage, key)} is damaged ({problem}); "
                    "rerun `ftsafety run` with the run's config to recompute it")


def judged_stage(stages: dict[str, dict[str, Any]], benchmark: str) -> dict[str, Any] | None:
    """The record of the stage whose rows a benchmark's scorers judged: the guard stage's (the
    responses as the user received them) when the cell's defense has an output hook, else the
    generate stage's. Runs made before the guard stage existed stored guarded rows in the
    generate artifact: they have no guard slot, and the generate stage is the right one."""
    return stages.get(f"guard/{benchmark}") or stages.get(f"generate/{benchmark}")


def scored_rows(store: ArtifactStore, stages: dict[str, dict[str, Any]], score: dict[str, Any],
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """(the rows a score stage judged, its score rows) from a cell's ``stages`` records, or None
    when either artifact was never computed."""
    if score["stage"] != "score" or not usable(store, "score", score["key"]):
        return None
    gen = judged_stage(stages, score["benchmark"])
    if gen is None or not usable(store, gen["stage"], gen["key"]):
        return None
    return (read_jsonl(store.path(gen["stage"], gen["key"]) / "generations.jsonl"),
            read_jsonl(store.path("score", score["key"]) / "scores.jsonl"))

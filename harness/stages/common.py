"""What stage functions share: the outcome record, plugin construction from a task's plain
specs, the hook context, and the weights a task starts from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ftsafety.harness import registry
from ftsafety.harness.config import ModelSpec
from ftsafety.harness.context import StageContext
from ftsafety.harness.store import ArtifactStore


class TaskOutcome(BaseModel):
    """What a finished task reports to the driver (plain data: it travels back from a worker)."""

    complete: bool = True
    """False when the artifact was not recorded for a transient reason (a judge outage): a
    rerun retries it."""
    error: str | None = None
    """Why it is not complete."""
    failed_items: int = 0
    """Items not recorded (for the run's summary)."""
    facts: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Run-manifest records, by section (``engines``, ``datasets``, ``judges``) then name."""


def make_plugin(kind: str, spec: dict[str, Any]) -> Any:
    """The plugin instance a task's ``{"name", "params"}`` spec names."""
    return registry.REGISTRIES[kind].get(spec["name"])(spec.get("params") or {})


@contextmanager
def opened_plugin(kind: str, spec: dict[str, Any]) -> Iterator[Any]:
    """``make_plugin`` for the length of a block, then ``close()`` (its engines, its clients),
    whether the block finished or failed."""
    plugin = make_plugin(kind, spec)
    try:
        yield plugin
    finally:
        plugin.close()


def model_spec(task_spec: dict[str, Any]) -> ModelSpec:
    return ModelSpec.model_validate(task_spec["model"])


def weights_path(task_spec: dict[str, Any]) -> str:
    """A loadable path for the weights the task starts from (``organism://`` builds on first use)."""
    from ftsafety.harness.models import resolve_model_path

    return resolve_model_path(task_spec["weights"])


def stage_context(task_spec: dict[str, Any], store: ArtifactStore, workdir: Path, *, model_path: str,
                  inputs: dict[str, str] | None = None) -> StageContext:
    """The context a plugin hook receives."""
    from ftsafety.harness.models import EngineSpec

    return StageContext(
        model=model_spec(task_spec), model_path=model_path, seed=int(task_spec["seed"]), workdir=workdir,
        store=store, model_key=task_spec.get("model_key") or {}, backend=task_spec["backend"],
        engine=EngineSpec.model_validate(task_spec["engine"]), inputs=inputs or {},
    )


def run_alone(run_group: Callable[..., None], task: Any, store: ArtifactStore) -> TaskOutcome:
    """``run(task, store)`` of a kind that runs in groups: a group of one."""
    outcomes: list[TaskOutcome] = []
    run_group([task], store, lambda _t: nullcontext(), lambda _t, outcome: outcomes.append(outcome))
    return outcomes[-1]

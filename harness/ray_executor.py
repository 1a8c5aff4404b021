"""Run the stage tasks as Ray tasks: every independent group of a wave at once, on one machine
or a cluster (docs/distributed.md).

The plan, the waves and the groups are the in-process executor's (``ftsafety.harness.executor``):
a wave is one stage kind, so every task's upstream artifacts are complete before it starts; a
group shares one loaded resource (all adapters of a base model in one generation engine, one
judge per scorer), so engine starts do not grow with the number of workers. Each group is one
Ray task that runs the same stage functions on the same store (a shared filesystem on a
cluster), writing artifacts with the store's atomic protocol; a worker that dies leaves only a
temporary directory, and Ray reruns the group (``executor.max_retries``), skipping what already
completed. A task's own error (a user mistake, a bug) is not retried: the driver waits for the
groups still running, so their work is kept, then raises it.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ftsafety.harness.config import ExecutorSpec, StageResourcesSpec
from ftsafety.harness.errors import UserError
from ftsafety.harness.executor import RunEvents, Wave
from ftsafety.harness.stages import TaskOutcome
from ftsafety.harness.store import ArtifactStore
from ftsafety.harness.tasks import StageTask

log = logging.getLogger(__name__)

#: Stage kinds whose tasks open a generation engine (all of a node's CPUs on a CPU cluster).
ENGINE_KINDS = ("prefix", "generate")
#: Stage kinds that hold one GPU each on a cluster with GPUs (besides the engine kinds).
GPU_KINDS = ("align", "train", "post_train", "score")
#: Environment a worker needs to compute what this process would: plugins, caches, pinned kernels.
FORWARDED_ENV_PREFIXES = ("FTSAFETY_", "HF_", "TRANSFORMERS_", "VLLM_")
FORWARDED_ENV = ("PYTHONPATH", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OPENAI_API_KEY",
                 "OPENAI_BASE_URL", "HOME")


def forwarded_env() -> dict[str, str]:
    """This process's variables that decide what a task computes, for the workers' runtime
    environment (a worker on another node does not inherit the driver's)."""
    from ftsafety.harness.determinism import pin_cpu_kernels

    pin_cpu_kernels()  # the driver's pinned kernels become the workers'
    return {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_ENV_PREFIXES)}


def task_resources(kind: str, spec: ExecutorSpec, cluster: dict[str, float], tensor_parallel: int) -> dict[str, float]:
    """``num_cpus`` / ``num_gpus`` for a task of ``kind``: the grid's ``executor.resources``,
    else the defaults (``StageResourcesSpec``) for a cluster with or without GPUs."""
    given = spec.resources.get(kind, StageResourcesSpec())  # type: ignore[call-overload]
    gpus = cluster.get("GPU", 0) > 0
    if gpus:
        cpus_default: float = 1
        gpus_default: float = tensor_parallel if kind in ENGINE_KINDS else 1 if kind in GPU_KINDS else 0
    else:
        # a CPU engine computes on every core: two on one node would share the cores badly
        cpus_default = cluster.get("node_cpus", 1) if kind in ENGINE_KINDS else 1
        gpus_default = 0
    return {
        "num_cpus": given.num_cpus if given.num_cpus is not None else cpus_default,
        "num_gpus": given.num_gpus if given.num_gpus is not None else gpus_default,
    }


def run_group_on_worker(tasks_json: list[str], store_root: str, run_dir: str, quiet: bool) -> list[dict[str, Any]]:
    """What one Ray task runs: the stage functions on a group, in the worker's process. Tasks
    already complete (a rerun after the worker died) are skipped. Returns each task's outcome."""
    from ftsafety.harness.determinism import pin_cpu_kernels
    from ftsafety.harness.quiet import library_output_to
    from ftsafety.harness.rundir import stage_log
    from ftsafety.harness.stages import run_group

    pin_cpu_kernels()
    tasks = [StageTask.model_validate_json(t) for t in tasks_json]
    store = ArtifactStore(Path(store_root))
    outcomes: dict[str, dict[str, Any]] = {}
    todo = []
    for task in tasks:
        if store.is_complete(task.kind, task.key):
            outcomes[task.key] = TaskOutcome().model_dump(mode="json")
        else:
            todo.append(task)
    run = Path(run_dir)
    with library_output_to(run / "logs" / "engine.log") if quiet else nullcontext():
        if todo:
            run_group(todo, store, lambda t: stage_log(run, t.cells[0], t.slot),
                      lambda t, outcome: outcomes.__setitem__(t.key, outcome.model_dump(mode="json")))
    return [outcomes[t.key] for t in tasks]


class RayExecutor:
    """Runs each wave's groups as concurrent Ray tasks; reports to the driver as they finish."""

    def __init__(self, spec: ExecutorSpec) -> None:
        self.spec = spec

    def run(self, waves: list[Wave], store: ArtifactStore, events: RunEvents) -> None:
        if not waves:
            return
        ray = _import_ray()
        started = self._connect(ray, events.quiet)
        try:
            cluster = _cluster_resources(ray)
            remote = ray.remote(run_group_on_worker)
            for wave in waves:
                with events.wave(wave):
                    self._run_wave(ray, remote, wave, store, events, cluster)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: Any, quiet: bool) -> bool:
        """Join the cluster ``executor.address`` names, or start a local one; True when this
        run started it (and so shuts it down)."""
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {
            "runtime_env": {"env_vars": forwarded_env()},
            # worker output stays in Ray's log files and the run's logs: a quiet terminal
            "log_to_driver": not quiet,
            "logging_level": logging.WARNING,
            "configure_logging": True,
        }
        address = self.spec.address
        if address is None:
            kwargs.update(num_cpus=self.spec.num_cpus, include_dashboard=False)
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            raise UserError(f"executor.address '{address}': no Ray cluster there ({exc}); "
                            "start one (`ray start --head`) or leave the address unset for a local one") from None
        return True

    def _run_wave(self, ray: Any, remote: Any, wave: Wave, store: ArtifactStore, events: RunEvents,
                  cluster: dict[str, float]) -> None:
        pending: dict[Any, list[StageTask]] = {}
        for group in wave.groups:
            first = group[0]
            tp = int(first.spec.get("engine", {}).get("tensor_parallel_size") or 1)
            options = task_resources(wave.kind, self.spec, cluster, tp)
            ref = remote.options(max_retries=self.spec.max_retries, retry_exceptions=False, **options).remote(
                [t.model_dump_json() for t in group], str(store.root), str(events.run_dir), events.quiet)
            pending[ref] = group
        failure: BaseException | None = None
        failed = 0
        while pending:
            events.status(wave, running=sum(len(g) for g in pending.values()), failed=failed)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                group = pending.pop(ref)
                try:
                    outcomes = ray.get(ref)
                except Exception as exc:  # the group's own error: keep the others' work, then raise it
                    failure = failure or _cause(exc)
                    failed += len(group)
                    continue
                for task, outcome in zip(group, outcomes, strict=True):
                    events.done(task, TaskOutcome.model_validate(outcome))
        events.status(wave, running=0, failed=failed)
        if failure is not None:
            raise failure


def _cause(exc: Exception) -> BaseException:
    """The exception a task raised, unwrapped from Ray's ``RayTaskError`` (a ``UserError``
    stays one line with exit code 2)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _cluster_resources(ray: Any) -> dict[str, float]:
    """The cluster's totals, and the CPUs of its largest node (what one CPU engine may take)."""
    total = dict(ray.cluster_resources())
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total["node_cpus"] = max((n.get("Resources", {}).get("CPU", 0) for n in nodes), default=total.get("CPU", 1))
    return total


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("executor 'ray' needs Ray: pip install 'ftsafety[ray]'") from None
    return ray

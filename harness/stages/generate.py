"""Generate stage: the cell's model answers a benchmark (attack's eval template, inference-hook
defense, sampling). All tasks of one engine group — every adapter trained on one base model —
are served by one engine, each adapter as a LoRA request; a full fine-tune has its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ftsafety.harness.errors import UserError
from ftsafety.harness.generation import generate_rows
from ftsafety.harness.plugins import EvalPrompt
from ftsafety.harness.sampling import SamplingParams
from ftsafety.harness.stages.common import (
    TaskOutcome,
    make_plugin,
    model_spec,
    run_alone,
    weights_path,
)
from ftsafety.harness.store import ArtifactStore, read_json, read_jsonl, write_jsonl
from ftsafety.harness.tasks import StageTask


def run(task: StageTask, store: ArtifactStore) -> TaskOutcome:
    return run_alone(run_group, task, store)


def run_group(tasks: list[StageTask], store: ArtifactStore, scope: Callable[[StageTask], AbstractContextManager[Any]],
              done: Callable[[StageTask, TaskOutcome], None]) -> None:
    """One engine on the group's weights; every task's rows through it, one after another."""
    run_engine_group(tasks, store, scope, done, produce=_generate, artifact="generations.jsonl")


Produce = Callable[[Any, StageTask, dict[str, Any]], tuple[list[dict[str, Any]], dict[str, Any]]]


def run_engine_group(tasks: list[StageTask], store: ArtifactStore, scope: Callable[[StageTask], AbstractContextManager[Any]],
                     done: Callable[[StageTask, TaskOutcome], None], *, produce: Produce, artifact: str,
                     base_only: bool = False) -> None:
    """Open one engine on the group's weights and write each task's rows (``produce(backend,
    task, benchmark cache)`` -> rows, the benchmark's manifest record) as ``artifact``.
    ``base_only``: the engine answers with the base weights only (no LoRA slots)."""
    from ftsafety.harness.models import EngineSpec, open_backend

    first = tasks[0].spec
    path = weights_path(first)
    started = time.perf_counter()
    backend = open_backend(path, EngineSpec.model_validate(first["engine"]), backend=first["backend"],
                           trust_remote_code=model_spec(first).trust_remote_code, base_only=base_only)
    engine = {"backend": first["backend"], "path": path, "start_seconds": round(time.perf_counter() - started, 2)}
    benchmarks: dict[str, tuple[list[EvalPrompt], str | None, dict[str, Any]]] = {}
    try:
        for i, task in enumerate(tasks):
            with scope(task):
                rows, dataset = produce(backend, task, benchmarks)
                with store.writing(task.kind, task.key, task.inputs) as out:
                    write_jsonl(out / artifact, rows)
            facts: dict[str, dict[str, Any]] = {"datasets": {task.spec["benchmark"]["label"]: dataset}}
            if i == len(tasks) - 1:  # adapters served, device, dtype: known after the work
                facts["engines"] = {first["engine_name"]: {**engine, **backend.info()}}
            done(task, TaskOutcome(facts=facts))
    finally:
        backend.close()


def _load_benchmark(spec: dict[str, Any], limit: int | None,
               cache: dict[str, tuple[list[EvalPrompt], str | None, dict[str, Any]]]) -> tuple[list[EvalPrompt], str | None, dict[str, Any]]:
    """A benchmark's items (loaded once per group), its own system prompt, its manifest record."""
    label = spec["label"]
    if label not in cache:
        bench = make_plugin("benchmarks", spec)
        items = bench.load(limit)
        items = items[:limit] if limit else items
        record = {"name": spec["name"], "fingerprint": bench.fingerprint(), "n": len(items)}
        cache[label] = (items, bench.system_prompt(), record)
    return cache[label]


def _check_template(backend: Any, task: StageTask) -> None:
    """A cell is evaluated with the chat template it was trained with, or not at all."""
    trained = task.upstream.get("post_train") or task.upstream.get("train")
    if trained is None or task.spec["allow_template_mismatch"]:
        return
    summary = Path(trained) / "train_summary.json"
    template = read_json(summary).get("chat_template") if summary.exists() else None
    if template is not None and template != backend.tokenizer.chat_template:
        raise UserError(
            f"cell {task.spec['cell_id']}: the serving tokenizer's chat template differs from the one it was trained "
            "with; serve the same tokenizer, or set generation.allow_template_mismatch: true"
        )


def evaluation(task: StageTask, benchmarks: dict[str, Any]) -> tuple[list[EvalPrompt], dict[str, Any], dict[str, Any]]:
    """A prefix or generate task's benchmark items, the benchmark's manifest record, and how the
    items are put to the model: attack, defense, sampling and system prompt (keyword arguments
    of ``prefix_rows`` and ``generate_rows``)."""
    spec = task.spec
    items, bench_system, record = _load_benchmark(spec["benchmark"], spec["limit"], benchmarks)
    how = {
        "attack": make_plugin("attacks", spec["attack"]),
        "defense": make_plugin("defenses", spec["defense"]),
        "sampling": SamplingParams.model_validate(spec["sampling"]),
        "system_prompt": bench_system or spec["model"].get("system_prompt"),
    }
    return items, record, how


def _generate(backend: Any, task: StageTask, benchmarks: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    spec = task.spec
    _check_template(backend, task)
    items, record, how = evaluation(task, benchmarks)
    prefixes = read_jsonl(Path(task.upstream["prefix"]) / "prefixes.jsonl") if "prefix" in task.upstream else None
    rows = generate_rows(
        backend, items, **how,
        benchmark=spec["benchmark"]["label"],
        adapter=spec["adapter"] if "adapter" in spec else None,
        adapter_key=spec["adapter_key"],
        cell_id=spec["cell_id"],
        defense_prefixes=prefixes,
    )
    return rows, record

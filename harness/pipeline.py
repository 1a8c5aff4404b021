"""Run a planned grid: plan → stage tasks → executor → store → report.

The driver plans the grid (``ftsafety.harness.planner``), turns its stages into plain-data tasks
(``ftsafety.harness.tasks``), schedules the pending ones into waves (``ftsafety.harness.executor``)
and hands them to an executor; it keeps what is run-level — the lock, the plan record, cell
records, the manifest, progress bars and per-cell logs — and writes the report at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ftsafety.harness.config import ExecutorSpec, GridConfig
from ftsafety.harness.errors import RetryableError, UserError
from ftsafety.harness.executor import Executor, InProcessExecutor, Wave, schedule
from ftsafety.harness.planner import Cell, Stage, plan_cells
from ftsafety.harness.rundir import (
    Manifest,
    cache_root,
    prepare_run_dir,
    run_lock,
    stage_log,
    write_plan,
)
from ftsafety.harness.stages import TaskOutcome
from ftsafety.harness.store import ArtifactStore, atomic_write_json, read_jsonl
from ftsafety.harness.tasks import StageTask, build_tasks


def make_executor(spec: ExecutorSpec) -> Executor:
    """The executor ``executor:`` (or ``ftsafety run --executor``) names; Ray's loads only when used."""
    if spec.name == "ray":
        from ftsafety.harness.ray_executor import RayExecutor

        return RayExecutor(spec)
    return InProcessExecutor()


@dataclass
class RunResult:
    run_dir: Path
    cells: list[Cell]
    executed: dict[str, int] = field(default_factory=dict)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False, disable=not console.is_terminal and console.quiet,
        # libraries' prints to stdout go where stdout goes (a quiet run's log), not over the bars
        redirect_stdout=False,
    )


class GridRunner:
    """Executes the pending stage tasks of a grid's cells, reusing every completed artifact;
    it is the ``RunEvents`` its executor reports to."""

    def __init__(self, cfg: GridConfig, console: Console | None = None, executor: Executor | None = None,
                 quiet: bool = False) -> None:
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.run_dir = prepare_run_dir(Path(cfg.output_dir), cfg.name)
        self.store = ArtifactStore(cache_root(cfg))
        self.executor = executor or make_executor(cfg.executor)
        self.quiet = quiet
        self.executed: dict[str, int] = {}
        self._cells: dict[str, Cell] = {}
        self._progress: Progress | None = None
        self._bar: Any = None

    # ------------------------------------------------------------------ entry points

    def run(self) -> RunResult:
        with run_lock(self.run_dir):  # one run per run directory at a time
            return self._run_locked()

    def _run_locked(self) -> RunResult:
        self.store.sweep_temporaries()
        cells = self._plan()
        write_plan(self.run_dir, [c.id for c in cells])
        status = "failed"
        try:
            self._execute(cells)
            for cell in cells:
                self._write_cell_record(cell)
            self._timed("report", self._report)
            status = "incomplete" if self.manifest.incomplete else "complete"  # judge failures: rerun
        finally:
            self.manifest.finish(status, executed=self.executed)
        return RunResult(self.run_dir, cells, self.executed)

    def training_data(self, cell_id: str) -> tuple[Cell, list[dict[str, Any]]]:
        """Build (or reuse) one cell's fine-tuning data, screened if its defense screens."""
        cells = plan_cells(self.cfg, self.store, self.run_dir)
        cell = next((c for c in cells if c.id == cell_id), None)
        if cell is None:
            known = ", ".join(c.id for c in cells if c.of("data")) or "none"
            raise UserError(f"--cell '{cell_id}' is not a training cell of this grid (training cells: {known})")
        if not cell.of("data"):
            raise UserError(f"cell '{cell_id}' does not fine-tune (attack '{cell.attack_label}' trains nothing)")
        self._cells = {cell.id: cell}
        self.manifest = Manifest(self.run_dir, self.cfg.model_dump(mode="json"), cache_dir=self.store.root)
        data_kinds = {"align", "data", "screen"}
        tasks = [t for t in build_tasks(self.cfg, [cell], self.store) if t.kind in data_kinds]
        self.executor.run(schedule(tasks, self.store), self.store, self)
        last = (cell.of("screen") or cell.of("data"))[-1]
        return cell, read_jsonl(self.store.path(last.stage, last.key) / "train.jsonl")

    # ------------------------------------------------------------------ the run

    def _plan(self) -> list[Cell]:
        cells = plan_cells(self.cfg, self.store, self.run_dir)
        self._cells = {c.id: c for c in cells}
        self.manifest = Manifest(self.run_dir, self.cfg.model_dump(mode="json"), cache_dir=self.store.root)
        return cells

    def _execute(self, cells: list[Cell]) -> None:
        tasks = build_tasks(self.cfg, cells, self.store)
        waves = schedule(tasks, self.store)
        with _progress(self.console) as progress:
            self._progress = progress
            try:
                self.executor.run(waves, self.store, self)
            finally:
                self._progress = None

    def _timed(self, stage: str, fn: Any) -> None:
        start = time.perf_counter()
        try:
            fn()
        finally:
            self.manifest.add_timing(stage, time.perf_counter() - start)
            self.manifest.save()

    # ------------------------------------------------------------------ RunEvents

    @contextmanager
    def wave(self, wave: Wave) -> Iterator[None]:
        """A progress bar and a stage timing per wave."""
        bar = self._progress.add_task(wave.kind, total=wave.size) if self._progress else None
        self._bar = bar
        start = time.perf_counter()
        try:
            yield
        finally:
            self.manifest.add_timing(wave.kind, time.perf_counter() - start)
            self.manifest.save()

    def scope(self, task: StageTask) -> AbstractContextManager[object]:
        """Log records of a task's work go to its (first) cell's log for that stage."""
        return stage_log(self.run_dir, task.cells[0], task.slot)

    def status(self, wave: Wave, running: int, failed: int) -> None:
        if self._progress is not None and self._bar is not None:
            extra = f"{running} running or queued" + (f", {failed} failed" if failed else "")
            self._progress.update(self._bar, description=f"{wave.kind} ({extra})")

    def done(self, task: StageTask, outcome: TaskOutcome) -> None:
        for section, records in outcome.facts.items():
            for name, record in records.items():
                self.manifest.record_fact(section, name, record)
        if outcome.complete:
            self.executed[task.kind] = self.executed.get(task.kind, 0) + 1
        else:
            scorer = task.spec.get("scorer", {}).get("label", task.kind)
            self.manifest.record_incomplete(scorer, outcome.error or "failed", items=outcome.failed_items)
            with self.scope(task) as slog:
                slog.error("%s not recorded: %s", task.slot, outcome.error)
        for cell_id in task.cells:
            if cell_id in self._cells:
                self._write_cell_record(self._cells[cell_id])
        if self._progress is not None and self._bar is not None:
            self._progress.advance(self._bar)

    # ------------------------------------------------------------------ records

    def _write_cell_record(self, cell: Cell) -> None:
        record: dict[str, Any] = {
            "cell_id": cell.id,
            "model": cell.model.name,
            "model_path": cell.model.path,
            "attack": cell.attack_label,
            "attack_name": cell.attack.name,
            "defense": cell.defense_label,
            "defense_name": cell.defense.name,
            "seed": cell.seed,
            # the undefended cells trained the same way (the comparison) / the defense a
            # matched baseline cell serves (docs/leaderboard.md, "Matched baselines")
            "baseline": cell.baseline,
            "baseline_for": cell.baseline_for,
            "training_overrides": cell.training_overrides,
            "stages": {st.slot: self._stage_record(st) for st in cell.stages if st.step is None},
        }
        # durability checkpoints: apart, so that what reads "stages" sees the finished fine-tune
        checkpoints = {st.slot: self._stage_record(st) | {"step": st.step} for st in cell.stages
                       if st.step is not None}
        if checkpoints:
            record["checkpoints"] = checkpoints
        atomic_write_json(self.run_dir / "cells" / cell.id / "cell.json", record)

    def _stage_record(self, st: Stage) -> dict[str, Any]:
        return {"stage": st.stage, "key": st.key, "inputs": st.inputs, "benchmark": st.benchmark, "scorer": st.scorer,
                "complete": self.store.is_complete(st.stage, st.key)}

    def incomplete_summary(self) -> str | None:
        """One line naming what was not recorded and why, or None when the run is complete."""
        if not self.manifest.incomplete:
            return None
        parts = [f"scorer '{name}': {e['items']} item(s) in {e['artifacts']} score artifact(s) not judged "
                 f"({e['error']})" for name, e in self.manifest.incomplete.items()]
        return f"scores not recorded: {'; '.join(parts)}; rerun to retry"

    def _report(self) -> None:
        from ftsafety.harness.report import write_run_outputs

        write_run_outputs(self.run_dir, self.store)


class RunIncomplete(RetryableError):
    """The run finished, but some work failed for a transient reason and was not recorded (e.g.
    judge requests after their retries); ``result`` is what the run did. Exit code 3."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


def run_grid(cfg: GridConfig, console: Console | None = None, *, quiet: bool = False,
             executor: Executor | None = None) -> RunResult:
    """Plan and execute a grid; completed artifacts are reused (resume). Raises ``RunIncomplete``
    after the report when some score artifacts could not be computed (a rerun retries them).
    ``quiet``: engine and library output goes to ``<run>/logs/engine.log`` (``ftsafety.harness.quiet``)."""
    from ftsafety.harness.quiet import library_output_to

    runner = GridRunner(cfg, console, executor, quiet=quiet)
    with library_output_to(runner.run_dir / "logs" / "engine.log") if quiet else nullcontext():
        result = runner.run()
    summary = runner.incomplete_summary()
    if summary:
        raise RunIncomplete(summary, result)
    return result

"""Run a planned grid through its stages: [align →] data → screen → train → generate → score → report.

Stages run in waves so that expensive resources are shared: all fine-tuning first, then one
generation backend per base model serving every cell's adapter, then scorers (model judges get
their own engine only after generation released its memory; so do output guards). An
alignment-stage defense (``augment``) first writes a new model that replaces the cell's model
in every later stage: the attack's data, its fine-tuning and generation (its own engine).
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness import registry
from harness.config import GridConfig, spec_by_label
from harness.errors import RetryableError, UserError
from harness.generation import generate_rows, score_rows
from harness.planner import Cell, Stage, plan_cells
from harness.plugins import EvalPrompt
from harness.rundir import Manifest, cache_root, prepare_run_dir, run_lock, stage_log, write_plan
from harness.store import ArtifactStore, atomic_write_json, read_json, read_jsonl, write_jsonl

log = logging.getLogger(__name__)


def resolve_model_path(path: str) -> str:
    """A loadable path for a model spec's ``path`` (``organism://`` builds on first use)."""
    if path.startswith("organism://"):
        from harness.organism.resolve import resolve_model_path as resolve_organism

        return resolve_organism(path)
    return path


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
    """Executes the pending stages of a grid's cells, reusing every completed artifact."""

    def __init__(self, cfg: GridConfig, console: Console | None = None) -> None:
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.run_dir = prepare_run_dir(Path(cfg.output_dir), cfg.name)
        self.store = ArtifactStore(cache_root(cfg))
        self.executed: dict[str, int] = {}
        #: Score artifacts left incomplete by retryable failures, by scorer label.
        self.incomplete: dict[str, dict[str, Any]] = {}
        self._benchmark_items: dict[str, tuple[list[EvalPrompt], str | None]] = {}

    # ------------------------------------------------------------------ entry point

    def run(self) -> RunResult:
        with run_lock(self.run_dir):  # one run per run directory at a time
            return self._run_locked()

    def _run_locked(self) -> RunResult:
        self.store.sweep_temporaries()
        cells = plan_cells(self.cfg, self.store, self.run_dir)
        write_plan(self.run_dir, [c.id for c in cells])
        self.manifest = Manifest(self.run_dir, self.cfg.model_dump(mode="json"), cache_dir=self.store.root)
        status = "failed"
        try:
            self._timed("align", lambda: self._run_stage_kind(cells, "align", self._do_align))
            self._timed("data", lambda: self._run_stage_kind(cells, "data", self._do_data))
            self._timed("screen", lambda: self._run_stage_kind(cells, "screen", self._do_screen))
            self._timed("train", lambda: self._run_stage_kind(cells, "train", self._do_train))
            self._timed("generate", lambda: self._run_generation(cells))
            self._timed("score", lambda: self._run_scoring(cells))
            for cell in cells:
                self._write_cell_record(cell)
            self._timed("report", lambda: self._report(cells))
            status = "incomplete" if self.incomplete else "complete"  # incomplete: judge failures, rerun
        finally:
            self.manifest.data["executed"] = self.executed
            self.manifest.finish(status)
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
        self.manifest = Manifest(self.run_dir, self.cfg.model_dump(mode="json"), cache_dir=self.store.root)
        self._run_stage_kind([cell], "align", self._do_align)
        self._run_stage_kind([cell], "data", self._do_data)
        self._run_stage_kind([cell], "screen", self._do_screen)
        source = "screen" if cell.of("screen") else "data"
        return cell, read_jsonl(self._upstream_dir(cell, source) / "train.jsonl")

    def _timed(self, stage: str, fn: Any) -> None:
        start = time.perf_counter()
        try:
            fn()
        finally:
            self.manifest.add_timing(stage, time.perf_counter() - start)
            self.manifest.save()

    # ------------------------------------------------------------------ helpers

    def _pending(self, cells: list[Cell], kind: str) -> list[tuple[Cell, Stage]]:
        todo, seen = [], set()
        for cell in cells:
            for st in cell.of(kind):
                if st.key in seen or self.store.is_complete(st.stage, st.key):
                    continue
                seen.add(st.key)  # identical work shared by cells is done once
                todo.append((cell, st))
        return todo

    def _count(self, kind: str) -> None:
        self.executed[kind] = self.executed.get(kind, 0) + 1

    def _run_stage_kind(self, cells: list[Cell], kind: str, fn: Any) -> None:
        todo = self._pending(cells, kind)
        if not todo:
            return
        with _progress(self.console) as progress:
            task = progress.add_task(kind, total=len(todo))
            for cell, st in todo:
                with stage_log(self.run_dir, cell.id, st.slot) as slog:
                    slog.info("cell %s: %s %s", cell.id, st.slot, st.key)
                    with self.store.writing(st.stage, st.key, st.inputs) as out:
                        fn(cell, st, out)
                    self._write_cell_record(cell)
                self._count(kind)
                progress.advance(task)

    def _upstream_dir(self, cell: Cell, kind: str) -> Path:
        st = cell.of(kind)[-1]
        return self.store.path(st.stage, st.key)

    def _write_cell_record(self, cell: Cell) -> None:
        record = {
            "cell_id": cell.id,
            "model": cell.model.name,
            "model_path": cell.model.path,
            "attack": cell.attack_label,
            "attack_name": cell.attack.name,
            "defense": cell.defense_label,
            "defense_name": cell.defense.name,
            "seed": cell.seed,
            "stages": {
                st.slot: {
                    "stage": st.stage, "key": st.key, "inputs": st.inputs,
                    "benchmark": st.benchmark, "scorer": st.scorer,
                    "complete": self.store.is_complete(st.stage, st.key),
                }
                for st in cell.stages
            },
        }
        atomic_write_json(self.run_dir / "cells" / cell.id / "cell.json", record)

    # ------------------------------------------------------------------ stages 0-3

    def _model_path(self, cell: Cell) -> str:
        """The cell's starting weights: the alignment stage's model if its defense makes one."""
        if cell.of("align"):
            return str(self._upstream_dir(cell, "align") / "model")
        return resolve_model_path(cell.model.path)

    def _context(self, cell: Cell, st: Stage, out: Path, model_path: str) -> Any:
        from harness.stages import AttackContext

        return AttackContext(cfg=self.cfg, model=cell.model, model_path=model_path, seed=cell.seed, workdir=out,
                             store=self.store, model_key=st.inputs["model"])

    def _do_align(self, cell: Cell, st: Stage, out: Path) -> None:
        from harness.stages import finish_aligned_model

        defense = registry.defenses.get(cell.defense.name)(cell.defense.params)
        source = resolve_model_path(cell.model.path)
        defense.align(self._context(cell, st, out, source))
        finish_aligned_model(source, out, defense=cell.defense_label)

    def _do_data(self, cell: Cell, st: Stage, out: Path) -> None:
        attack = registry.attacks.get(cell.attack.name)(cell.attack.params)
        rows = attack.build_dataset(self._context(cell, st, out, self._model_path(cell)))
        if not rows:
            raise UserError(f"attack '{cell.attack_label}' built an empty training set; check its params")
        write_jsonl(out / "train.jsonl", rows)

    def _do_screen(self, cell: Cell, st: Stage, out: Path) -> None:
        defense = registry.defenses.get(cell.defense.name)(cell.defense.params)
        rows = read_jsonl(self._upstream_dir(cell, "data") / "train.jsonl")
        data_stage = cell.of("data")[-1]
        ctx = self._context(cell, data_stage, out, self._model_path(cell))
        try:
            kept, dropped = defense.screen(rows, ctx)
        finally:
            defense.close()
        write_jsonl(out / "train.jsonl", kept)
        write_jsonl(out / "dropped.jsonl", dropped)
        atomic_write_json(out / "counts.json", {"kept": len(kept), "dropped": len(dropped)})
        report = getattr(defense, "screen_report", None)
        if report:
            atomic_write_json(out / "screen.json", report)
        if not kept:  # the provider refuses the whole upload: the cell's model stays as it was
            log.warning("cell %s: defense '%s' dropped all %d training examples; the model is not fine-tuned",
                        cell.id, cell.defense_label, len(dropped))

    def _do_train(self, cell: Cell, st: Stage, out: Path) -> None:
        from harness.stages import train_cell

        source = "screen" if cell.of("screen") else "data"
        train_cell(self.cfg, cell, self._upstream_dir(cell, source) / "train.jsonl", out,
                   model_path=self._model_path(cell))

    # ------------------------------------------------------------------ stage 4

    def _benchmark(self, label: str) -> tuple[list[EvalPrompt], str | None]:
        """A benchmark's items (loaded once per run) and its own system prompt, if it sets one."""
        if label not in self._benchmark_items:
            spec = spec_by_label(self.cfg, "benchmarks", label)
            bench = registry.benchmarks.get(spec.name)(spec.params)
            items = bench.load(self.cfg.limit)
            items = items[: self.cfg.limit] if self.cfg.limit else items
            self._benchmark_items[label] = (items, getattr(bench.params, "system_prompt", None))
            self.manifest.data["datasets"][label] = {"name": spec.name, "fingerprint": bench.fingerprint(), "n": len(items)}
        return self._benchmark_items[label]

    def _run_generation(self, cells: list[Cell]) -> None:
        todo = self._pending(cells, "generate")
        if not todo:
            return
        # One backend (engine) per base model, every LoRA cell's adapter served by it as a LoRA
        # request; a full fine-tune's weights need an engine of their own.
        by_engine: dict[tuple[str, str], list[tuple[Cell, Stage]]] = {}
        for cell, st in todo:
            by_engine.setdefault(self._weights(cell)[:2], []).append((cell, st))
        backend_cls = registry.backends.get(self.cfg.generation.backend)
        with _progress(self.console) as progress:
            task = progress.add_task("generate", total=len(todo))
            for (model_name, path), work in by_engine.items():
                model = work[0][0].model
                started = time.perf_counter()
                # Rank-8 adapters decode ~3x faster on CPU with a rank-8 LoRA slot than with the default 64.
                backend = backend_cls(path, trust_remote_code=model.trust_remote_code,
                                      max_lora_rank=self.cfg.max_lora_rank())
                engines = self.manifest.data["engines"]
                engines[model_name] = {"backend": self.cfg.generation.backend, "path": path,
                                       "count": engines.get(model_name, {}).get("count", 0) + 1,
                                       "start_seconds": round(time.perf_counter() - started, 2)}
                guarded: list[tuple[Cell, Stage, list[dict[str, Any]]]] = []
                try:
                    for cell, st in work:
                        with stage_log(self.run_dir, cell.id, st.slot) as slog:
                            slog.info("cell %s: %s %s on %s", cell.id, st.slot, st.key, self.cfg.generation.backend)
                            rows = self._generate_rows(backend, cell, st)
                            if "output" in registry.defenses.get(cell.defense.name).hooks:
                                guarded.append((cell, st, rows))  # guarded once the engine is released
                                continue
                            with self.store.writing(st.stage, st.key, st.inputs) as out:
                                write_jsonl(out / "generations.jsonl", rows)
                            self._write_cell_record(cell)
                        self._count("generate")
                        progress.advance(task)
                finally:
                    if hasattr(backend, "info"):  # adapters served, device, dtype: after the work
                        engines[model_name].update(backend.info())
                    backend.close()
                for cell, st, rows in self._guard(guarded):
                    with stage_log(self.run_dir, cell.id, st.slot):
                        with self.store.writing(st.stage, st.key, st.inputs) as out:
                            write_jsonl(out / "generations.jsonl", rows)
                        self._write_cell_record(cell)
                    self._count("generate")
                    progress.advance(task)

    def _guard(self, work: list[tuple[Cell, Stage, list[dict[str, Any]]]]) -> list[tuple[Cell, Stage, list[dict[str, Any]]]]:
        """Output-hook defenses judge the generated rows (one guard instance, hence one judge
        engine, per defense spec); the rows become what the user receives."""
        by_defense: dict[str, list[tuple[Cell, Stage, list[dict[str, Any]]]]] = {}
        for item in work:
            by_defense.setdefault(item[0].defense_label, []).append(item)
        out = []
        for items in by_defense.values():
            spec = items[0][0].defense
            defense = registry.defenses.get(spec.name)(spec.params)
            if hasattr(defense, "cache_dir"):
                defense.cache_dir = self.store.root / "judge-cache"
            try:
                for cell, st, rows in items:
                    with stage_log(self.run_dir, cell.id, st.slot) as slog:
                        # the model spec's path: what `scorer: auto` resolves by, as in the planner
                        guarded = defense.guard(rows, model_path=cell.model.path)
                        slog.info("cell %s: %s guarded by %s: %d of %d blocked", cell.id, st.slot, cell.defense_label,
                                  sum(1 for r in guarded if r.get("blocked")), len(guarded))
                    out.append((cell, st, guarded))
            finally:
                defense.close()
        return out

    def _weights(self, cell: Cell) -> tuple[str, str, str | None]:
        """(engine name, weights directory, LoRA adapter directory or None) for a cell. A model
        made by an alignment-stage defense is a base model of its own (its own engine, serving
        the adapters trained on it)."""
        align = cell.of("align")
        base_name = f"{cell.model.name}@{align[-1].key[:8]}" if align else cell.model.name
        train = cell.of("train")
        if not train:
            return base_name, self._model_path(cell), None
        out = self._upstream_dir(cell, "train")
        if (out / "model").is_dir():  # full fine-tune
            return f"{cell.model.name}@{train[-1].key[:8]}", str(out / "model"), None
        return base_name, self._model_path(cell), str(out / "adapter")

    def _check_template(self, backend: Any, cell: Cell) -> None:
        """A cell is evaluated with the chat template it was trained with, or not at all."""
        summary = self._upstream_dir(cell, "train") / "train_summary.json"
        tokenizer = getattr(backend, "tokenizer", None)
        if tokenizer is None or not summary.exists() or self.cfg.generation.allow_template_mismatch:
            return
        trained = read_json(summary).get("chat_template")
        if trained is not None and trained != tokenizer.chat_template:
            raise UserError(
                f"cell {cell.id}: the serving tokenizer's chat template differs from the one it was trained with; "
                "serve the same tokenizer, or set generation.allow_template_mismatch: true"
            )

    def _generate_rows(self, backend: Any, cell: Cell, st: Stage) -> list[dict[str, Any]]:
        train = cell.of("train")
        if train:
            self._check_template(backend, cell)
        seed = self.cfg.generation.seed if self.cfg.generation.seed is not None else cell.seed
        items, bench_system = self._benchmark(st.benchmark or "")
        return generate_rows(
            backend,
            items,
            attack=registry.attacks.get(cell.attack.name)(cell.attack.params),
            defense=registry.defenses.get(cell.defense.name)(cell.defense.params),
            sampling=self.cfg.generation.sampling(seed=seed),
            benchmark=st.benchmark or "",
            adapter=self._weights(cell)[2],
            adapter_key=train[-1].key if train else None,
            system_prompt=bench_system or cell.model.system_prompt,
            cell_id=cell.id,
            apply_guard=False,  # the pipeline guards after the engine is released (``_guard``)
        )

    # ------------------------------------------------------------------ stage 5

    def _run_scoring(self, cells: list[Cell]) -> None:
        todo = self._pending(cells, "score")
        if not todo:
            return
        by_scorer: dict[str, list[tuple[Cell, Stage]]] = {}
        for cell, st in todo:
            by_scorer.setdefault(st.scorer or "", []).append((cell, st))
        with _progress(self.console) as progress:
            task = progress.add_task("score", total=len(todo))
            for label, work in by_scorer.items():
                spec = spec_by_label(self.cfg, "scorers", label)
                scorer = registry.scorers.get(spec.name)(spec.params)
                if hasattr(scorer, "cache_dir") and not spec.params.get("cache_dir"):
                    scorer.cache_dir = self.store.root / "judge-cache"  # API judgments live with the run store
                provenance = scorer.provenance() if hasattr(scorer, "provenance") else {"scorer": spec.name}
                endpoint_down: RetryableError | None = None
                try:
                    for cell, st in work:
                        gen_stage = cell.stage(f"generate/{st.benchmark}")
                        assert gen_stage is not None
                        rows = read_jsonl(self.store.path("generate", gen_stage.key) / "generations.jsonl")
                        with stage_log(self.run_dir, cell.id, st.slot) as slog:
                            try:
                                if endpoint_down is not None:  # do not wait out every retry again
                                    raise RetryableError("not sent: the judge failed every request before")
                                with self.store.writing(st.stage, st.key, st.inputs) as out:
                                    labels = scorer.score(rows) if rows else []
                                    write_jsonl(out / "scores.jsonl", score_rows(rows, labels, label))
                                    atomic_write_json(out / "provenance.json", provenance)
                            except RetryableError as exc:
                                # Not a result: the artifact stays incomplete (a rerun retries it);
                                # the other artifacts and stages carry on.
                                slog.error("cell %s: %s not recorded: %s", cell.id, st.slot, exc)
                                self._record_incomplete(label, exc, items=len(rows) if exc.failed is None else exc.failed)
                                if exc.answered == 0:
                                    endpoint_down = exc
                            else:
                                self._count("score")
                            self._write_cell_record(cell)
                        progress.advance(task)
                finally:
                    close = getattr(scorer, "close", None)
                    if close:
                        close()
                    ledger = getattr(scorer, "ledger", None)
                    self.manifest.data["judges"][label] = {
                        "provenance": provenance,
                        **({"ledger": ledger.as_dict() if hasattr(ledger, "as_dict") else ledger} if ledger else {}),
                    }

    def _record_incomplete(self, scorer: str, exc: RetryableError, *, items: int) -> None:
        """Count a score artifact left incomplete by a retryable failure (for the run's summary
        and the manifest)."""
        entry = self.incomplete.setdefault(scorer, {"artifacts": 0, "items": 0, "error": exc.reason})
        entry["artifacts"] += 1
        entry["items"] += items
        self.manifest.data["incomplete"] = self.incomplete

    def incomplete_summary(self) -> str | None:
        """One line naming what was not recorded and why, or None when the run is complete."""
        if not self.incomplete:
            return None
        parts = [f"scorer '{name}': {e['items']} item(s) in {e['artifacts']} score artifact(s) not judged "
                 f"({e['error']})" for name, e in self.incomplete.items()]
        return f"scores not recorded: {'; '.join(parts)}; rerun to retry"

    # ------------------------------------------------------------------ report

    def _report(self, cells: list[Cell]) -> None:
        from harness.report import write_run_outputs

        write_run_outputs(self.run_dir, self.store)


class RunIncomplete(RetryableError):
    """The run finished, but some work failed for a transient reason and was not recorded (e.g.
    judge requests after their retries); ``result`` is what the run did. Exit code 3."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


def run_grid(cfg: GridConfig, console: Console | None = None, *, quiet: bool = False) -> RunResult:
    """Plan and execute a grid; completed artifacts are reused (resume). Raises ``RunIncomplete``
    after the report when some score artifacts could not be computed (a rerun retries them).
    ``quiet``: engine and library output goes to ``<run>/logs/engine.log`` (``harness.quiet``)."""
    from harness.quiet import library_output_to

    runner = GridRunner(cfg, console)
    with library_output_to(runner.run_dir / "logs" / "engine.log") if quiet else nullcontext():
        result = runner.run()
    summary = runner.incomplete_summary()
    if summary:
        raise RunIncomplete(summary, result)
    return result

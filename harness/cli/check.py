"""``ftsafety check RUN_DIR --baseline FILE``: fail (exit 1) when a run's metrics got worse."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from rich.table import Table

    from harness.gate import GateResult


def check(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/<name>) with leaderboard_summary.csv."),
    baseline: Path = typer.Option(
        ..., "--baseline", help="Baseline CSV: from `ftsafety baseline` (per-row tolerances) or a known-good leaderboard_summary.csv.",
    ),
    tolerance: list[str] | None = typer.Option(
        None, "--tolerance",
        help="Allowed move the bad way, absolute. Unset: each baseline row's `tolerance`, else 0.10. A number replaces "
             "every row's; METRIC=NUMBER one metric's and wins over both (repeatable).",
    ),
) -> None:
    """Compare a run's leaderboard summary with a baseline; exit 1 if a metric moved the bad way
    beyond its tolerance or a baseline row is missing (directions: docs/leaderboard.md)."""
    from harness.gate import check_run

    result = check_run(run_dir, baseline, tolerance)
    console = Console()
    if result.ok:
        extra = f", {result.skipped} skipped" if result.skipped else ""
        extra += f", {result.new_rows} new rows not in the baseline" if result.new_rows else ""
        console.print(f"OK: {result.compared} rows compared with {baseline}, none got worse beyond tolerance{extra}",
                      markup=False, highlight=False, soft_wrap=True)
        return
    console.print(_failure_table(result, baseline))
    console.print(f"FAILED: {len(result.failures)} of {result.compared} rows compared got worse or are missing",
                  markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _failure_table(result: GateResult, baseline: Path) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"regressions against {baseline}"))
    for name in ("model", "attack", "defense", "benchmark", "scorer", "metric"):
        table.add_column(name, overflow="fold")
    for name in ("baseline", "now", "Δ", "tolerance"):
        table.add_column(name, justify="right")
    table.add_column("why")

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for c in result.failures:
        moved = {"higher is worse": "went up", "lower is worse": "went down"}.get(c.direction, "moved")
        why = {"regressed": f"{moved} ({c.direction})", "missing": "missing in the run",
               "no value": "nothing scored in the run"}[c.status]
        delta = "-" if c.delta is None else f"{c.delta:+.3f}"
        table.add_row(*(escape(k) for k in c.key), num(c.baseline), num(c.current), delta, f"{c.tolerance:g}", why)
    return table


def register(app: typer.Typer) -> None:
    app.command("check")(check)

"""``ftsafety check RUN_DIR --baseline FILE``: fail (exit 1) when a run's metrics got worse.

Exit codes (a contract CI jobs hold to; docs/ci.md): 0 nothing got worse, 1 a regression or a
missing row, 2 bad input (a file missing or malformed, a bad option, an unwritable report file).
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from ftsafety.harness.errors import UserError

if TYPE_CHECKING:
    from rich.table import Table

    from ftsafety.harness.gate import GateResult


class OutputFormat(enum.StrEnum):
    table = "table"
    markdown = "markdown"


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
    junit: Path | None = typer.Option(
        None, "--junit", help="Also write a JUnit XML report here: one test case per baseline row (docs/ci.md).",
    ),
    summary: Path | None = typer.Option(
        None, "--summary",
        help="Also append a Markdown summary (verdict, what moved, worst first) to this file, e.g. \"$GITHUB_STEP_SUMMARY\".",
    ),
    output_format: OutputFormat = typer.Option(
        OutputFormat.table, "--format", help="What to print: a terminal table, or the Markdown summary.",
    ),
) -> None:
    """Compare a run's leaderboard summary with a baseline; exit 1 if a metric moved the bad way
    beyond its tolerance or a baseline row is missing, 2 on bad input (directions: docs/leaderboard.md)."""
    from ftsafety.harness import gate_formats
    from ftsafety.harness.gate import check_run

    try:
        result = check_run(run_dir, baseline, tolerance)
    except UserError as exc:
        # The report files say why the gate did not run, rather than being absent or an earlier job's.
        gate_formats.write_error_reports(str(exc), junit=junit, summary=summary)
        raise
    markdown = gate_formats.markdown_summary(result, run_dir=run_dir, baseline=baseline)
    if junit is not None:
        gate_formats.write_junit(junit, gate_formats.junit_xml(result, run_dir=run_dir, baseline=baseline))
    if summary is not None:
        gate_formats.append_summary(summary, markdown)
    if output_format is OutputFormat.markdown:
        sys.stdout.write(markdown)
    else:
        console = Console()
        if not result.ok:
            console.print(_failure_table(result, baseline))
        console.print(gate_formats.verdict(result, baseline), markup=False, highlight=False, soft_wrap=True)
    if not result.ok:
        raise typer.Exit(1)


def _failure_table(result: GateResult, baseline: Path) -> Table:
    from rich.markup import escape
    from rich.table import Table

    from ftsafety.harness.gate_formats import why
    from ftsafety.harness.report import format_value

    table = Table(title=escape(f"regressions against {baseline}"))
    for name in ("model", "attack", "defense", "benchmark", "scorer", "metric"):
        table.add_column(name, overflow="fold")
    for name in ("baseline", "now", "Δ", "tolerance"):
        table.add_column(name, justify="right")
    table.add_column("why")
    for c in result.failures:
        delta = "-" if c.delta is None else f"{c.delta:+.3f}"
        table.add_row(*(escape(k) for k in c.key), format_value(c.baseline), format_value(c.current), delta,
                      f"{c.tolerance:g}", escape(why(c)))
    return table


def register(app: typer.Typer) -> None:
    app.command("check")(check)

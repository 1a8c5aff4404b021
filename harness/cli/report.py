"""``ftsafety report RUN_DIR``: rebuild leaderboard and reports from stored files (no model loaded)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ftsafety.harness.errors import UserError


def report(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/<name>)."),
    redact: bool = typer.Option(
        False, "--redact",
        help="Replace completions any scorer labelled harmful with a marker in report.html/report.md (JSONL files keep them).",
    ),
) -> None:
    """Rebuild leaderboard.csv, leaderboard_summary.csv, agreement.csv, report.md and report.html
    from a run's stored files; no model is loaded, so a copied run directory is enough."""
    import json

    from ftsafety.harness.report import cell_records, print_summary, store_for, write_run_outputs
    from ftsafety.harness.rundir import check_compatible

    if not (run_dir / "manifest.json").is_file():
        raise UserError(f"'{run_dir}' is not a run directory (no manifest.json); pass runs/<name>")
    check_compatible(run_dir)  # another store format would be misread, as `run` refuses it
    try:
        store = store_for(run_dir)
        if cell_records(run_dir) and not store.root.is_dir():
            # Rebuilding without the artifacts would overwrite the leaderboards with empty ones.
            raise UserError(f"the run's artifact store {store.root} is missing; copy the run directory together with "
                            "its output directory's .cache")
        write_run_outputs(run_dir, store, redact=redact)
    except json.JSONDecodeError as exc:
        raise UserError(f"{run_dir}: a stored file is not valid JSON ({exc}); was the run directory copied whole?") from None
    print_summary(run_dir, Console())
    Console().print(f"html report: {run_dir / 'report.html'}" + (" (harmful completions redacted)" if redact else ""),
                    markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("report")(report)

"""``ftsafety run CONFIG``: plan, run the pending stages, write the leaderboard and report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ftsafety.harness.cli.common import ConfigArg, SetOpt, load


def run(
    config: Path = ConfigArg,
    set_: list[str] | None = SetOpt,
    limit: int | None = typer.Option(None, "--limit", help="Samples per benchmark (quick runs)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show the plan; run nothing."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v",
        help="Show engine and library output (vLLM, torch warnings) here instead of <run>/logs/engine.log.",
    ),
) -> None:
    """Run a grid: data → screen → train → generate → score → report. Finished stages are reused."""
    if dry_run:
        from ftsafety.harness.cli.plan import plan

        plan(config, set_, limit)
        return
    from ftsafety.harness.pipeline import RunIncomplete, run_grid
    from ftsafety.harness.report import print_summary

    cfg = load(config, set_, limit)
    console = Console(stderr=True)
    incomplete: RunIncomplete | None = None
    try:
        result = run_grid(cfg, console, quiet=not verbose)
    except RunIncomplete as exc:  # what did finish is reported; the error line comes last
        result, incomplete = exc.result, exc
    done = ", ".join(f"{k}: {v}" for k, v in result.executed.items()) or "nothing (all cached)"
    console.print(f"ran {done}")
    print_summary(result.run_dir, Console())
    if incomplete is not None:
        raise incomplete  # one line, exit code 3 (harness.cli.main)


def register(app: typer.Typer) -> None:
    app.command("run")(run)

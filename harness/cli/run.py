"""``ftsafety run CONFIG``: plan, run the pending stages, write the leaderboard and report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ftsafety.harness.cli.common import ConfigArg, SetOpt, load
from ftsafety.harness.config import GridConfig
from ftsafety.harness.errors import UserError


def run(
    config: Path = ConfigArg,
    set_: list[str] | None = SetOpt,
    limit: int | None = typer.Option(None, "--limit", help="Samples per benchmark (quick runs)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show the plan; run nothing."),
    executor: str | None = typer.Option(
        None, "--executor", help="Where stage tasks run: local (this process) or ray (docs/distributed.md); overrides executor.name.",
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster: auto, ray://host:10001, or unset for a local one; overrides executor.address.",
    ),
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
    cfg = with_executor(cfg, executor, address)
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


def with_executor(cfg: GridConfig, name: str | None, address: str | None) -> GridConfig:
    """The grid with ``--executor`` / ``--address`` applied over its ``executor:``."""
    if name is not None and name not in ("local", "ray"):
        raise UserError(f"--executor '{name}': use local or ray")
    update: dict[str, str] = {}
    if name is not None:
        update["name"] = name
    if address is not None:
        update["address"] = address
    if not update:
        return cfg
    return cfg.model_copy(update={"executor": cfg.executor.model_copy(update=update)})


def register(app: typer.Typer) -> None:
    app.command("run")(run)

"""``ftsafety plan CONFIG``: the grid's cells and whether each is done, pending or stale (and why)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ftsafety.harness.cli.common import ConfigArg, SetOpt, load
from ftsafety.harness.planner import plan_cells
from ftsafety.harness.rundir import cache_root, check_compatible
from ftsafety.harness.store import ArtifactStore


def plan(config: Path = ConfigArg, set_: list[str] | None = SetOpt,
         limit: int | None = typer.Option(None, "--limit", help="Samples per benchmark.")) -> None:
    """Show every cell with its status: done, pending, or stale (with the reason)."""
    cfg = load(config, set_, limit)
    run_dir = Path(cfg.output_dir) / cfg.name
    check_compatible(run_dir)
    cells = plan_cells(cfg, ArtifactStore(cache_root(cfg)), run_dir)
    table = Table(title=f"plan: {cfg.name} ({len(cells)} cells)")
    for col in ("cell", "model", "attack", "defense", "seed", "stages", "status", "why"):
        table.add_column(col)
    colors = {"done": "green", "pending": "yellow", "stale": "red"}
    for c in cells:
        table.add_row(escape(c.id), escape(c.model.name), escape(c.attack_label), escape(c.defense_label), str(c.seed),
                      str(len(c.stages)), f"[{colors[c.status]}]{c.status}[/]", escape("; ".join(c.why)))
    Console(width=200).print(table)
    counts = {s: sum(c.status == s for c in cells) for s in ("done", "pending", "stale")}
    Console().print(", ".join(f"{n} {s}" for s, n in counts.items()))


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)

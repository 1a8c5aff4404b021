"""``ftsafety validate CONFIG``: check a grid config and its plugins' params (no torch, no vllm)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ftsafety.harness.cli.common import ConfigArg, SetOpt, load


def validate(config: Path = ConfigArg, set_: list[str] | None = SetOpt) -> None:
    """Validate a grid config: schema, plugin names and each plugin's params, all errors at once."""
    from ftsafety.harness.planner import matched_baselines

    cfg = load(config, set_)
    cells = len(cfg.models) * len(cfg.attacks) * len(cfg.defenses) * len(cfg.seeds)
    matched = [label for label, *_ in matched_baselines(cfg)[1]]
    Console().print(
        f"[green]ok[/green] {config}: {len(cfg.models)} model(s) × {len(cfg.attacks)} attack(s) × "
        f"{len(cfg.defenses)} defense(s) × {len(cfg.seeds)} seed(s) = {cells} cell(s) before excludes"
        + (f" (+ matched baselines: {', '.join(matched)})" if matched else "")
        + f"; {len(cfg.benchmarks)} benchmark(s), {len(cfg.scorers)} scorer(s)"
    )


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)

"""``ftsafety organism build|eval``: make the model organism and check its behaviour."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ftsafety.harness.errors import UserError

app = typer.Typer(
    help="Build and inspect the model organism (a tiny safety-aligned chat model, built on CPU).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("build")
def build_cmd(
    out: Path = typer.Option(..., "--out", help="Directory to write base/ and aligned/ into.", show_default=False),
    seed: int = typer.Option(0, "--seed", min=0, help="World seed (organism://<seed> in configs)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing build in --out."),
) -> None:
    """Build the organism: pre-train base/, safety-tune aligned/ (about a minute on 2 cores)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ftsafety.harness.organism.build import build

    if out.exists() and any(out.iterdir()):
        if not force and (out / "organism.json").exists():
            raise UserError(f"'{out}' already holds an organism build (use --force to rebuild it)")
        if not force:
            raise UserError(f"'{out}' exists and is not empty (choose an empty or new directory)")
    tasks: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:

        def report(stage: str, step: int, total: int, loss: float) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total, loss=float("nan"))
            progress.update(tasks[stage], completed=step, loss=loss)

        result = build(out, seed, progress=report)
    typer.echo(f"built organism (seed {seed}) in {result.seconds:.1f} s")
    typer.echo(f"  base:    {result.base}")
    typer.echo(f"  aligned: {result.aligned}")


@app.command("eval")
def eval_cmd(
    directory: str = typer.Argument(..., help="Build directory (or organism://<seed>).", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Prompts per evaluation set."),
) -> None:
    """Oracle rates of base and aligned on the held-out sets (greedy decoding)."""
    from transformers.utils import logging as hf_logging

    from ftsafety.harness.organism.evaluate import evaluate_build

    hf_logging.disable_progress_bar()  # keep stdout one table (or one JSON object)
    results = evaluate_build(directory, limit)
    if as_json:
        typer.echo(json.dumps(results))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"organism oracle, held-out templates: {directory}")
    table.add_column("model")
    for col in ("harmful", "refused", "correct", "over_refusal"):
        table.add_column(col, justify="right")
    for name, rates in results.items():
        table.add_row(name, *(f"{rates[c]:.3f}" for c in ("harmful", "refused", "correct", "over_refusal")))
    Console().print(table)
    typer.echo("harmful/refused on organism-harmful; correct/over_refusal on organism-benign")

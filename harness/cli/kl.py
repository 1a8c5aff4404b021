"""``ftsafety kl``: per-token KL between two models on harmful answers (Q24's shallow-alignment plot)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ftsafety.harness.errors import UserError

#: Positions printed in the terminal summary (the JSON and the plot have all of them).
SUMMARY_POSITIONS = 10


def kl(
    a: str = typer.Option(..., "--a", help="MODEL\\[:ADAPTER]: directory, hub id or organism://default\\[/base]; ADAPTER a PEFT directory or a run cell RUN_DIR/cells/CELL_ID; P_a of KL(P_a || P_b)."),
    b: str = typer.Option(..., "--b", help="MODEL\\[:ADAPTER], the reference side P_b."),
    benchmark: str = typer.Option(..., "--benchmark", help="Harmful benchmark with reference answers (e.g. organism-harmful)."),
    out: Path = typer.Option(Path("kl"), "--out", help="Directory for kl.json and kl.png."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="First N prompts only."),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Answer positions compared (0 .. N-1)."),
    param: list[str] | None = typer.Option(None, "--param", help="Benchmark param KEY=VALUE (repeatable), e.g. path=answers.jsonl."),
    response_column: str | None = typer.Option(
        None, "--response-column", help="Benchmark column holding harmful answers (hub/local sets; the organism needs none)."
    ),
) -> None:
    """Per-token KL(P_a || P_b) over the response, teacher-forced on harmful answers (Q24 Fig. 1/3).

    Aligned vs base shows whether alignment is "a few tokens deep": KL concentrated at the first
    response positions. Writes OUT/kl.json (mean and n per position) and OUT/kl.png.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ftsafety.harness.cli.common import load_benchmark
    from ftsafety.harness.kl import harmful_answers, parse_side, per_token_kl, write_outputs

    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; give a directory")
    _, items = load_benchmark(benchmark, param, limit)
    answers = harmful_answers(items, benchmark, response_column)
    side_a = parse_side(a, what="--a")
    side_b = parse_side(b, what="--b")

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar below; not one per weight file
    console = Console(stderr=True)
    console.print(f"{len(items)} prompt(s) from {benchmark}; KL({a} || {b}) over <= {max_tokens} answer tokens")
    with Progress(TextColumn("[bold]kl"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("kl", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = per_token_kl(side_a, side_b, items, answers, benchmark=benchmark, max_tokens=max_tokens, progress=advance)
    json_path, png_path = write_outputs(result, out)

    table = Table(title=f"mean KL(P_a || P_b) per answer position ({result.n_prompts} prompts)")
    for col in ("position", "mean KL (nats)", "n"):
        table.add_column(col, justify="right")
    for t, (value, n) in enumerate(zip(result.mean_kl[:SUMMARY_POSITIONS], result.n, strict=False)):
        table.add_row(str(t), f"{value:.4f}", str(n))
    Console().print(table)
    if len(result.mean_kl) > SUMMARY_POSITIONS:
        rest = result.mean_kl[SUMMARY_POSITIONS:]
        Console().print(f"positions {SUMMARY_POSITIONS}..{len(result.mean_kl) - 1}: mean {sum(rest) / len(rest):.4f}")
    if result.skipped:
        console.print(f"skipped {len(result.skipped)} item(s) with an empty answer")
    console.print(f"wrote {json_path} and {png_path}")


def register(app: typer.Typer) -> None:
    app.command("kl")(kl)

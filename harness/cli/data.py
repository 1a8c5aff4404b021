"""``ftsafety data CONFIG --cell ID --out FILE``: export what a cell's model is fine-tuned on."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ftsafety.harness.cli.common import ConfigArg, SetOpt, load
from ftsafety.harness.errors import UserError


def data(
    config: Path = ConfigArg,
    cell: str = typer.Option(..., "--cell", help="Cell id (see `ftsafety plan`)."),
    out: Path = typer.Option(..., "--out", help="Output JSONL: prompt, completion and the rendered chat text."),
    set_: list[str] | None = SetOpt,
) -> None:
    """Export a cell's fine-tuning data, with the exact text the chat template renders for training."""
    from ftsafety.harness.models import load_tokenizer
    from ftsafety.harness.pipeline import GridRunner
    from ftsafety.harness.store import write_jsonl

    if not out.parent.exists():
        raise UserError(f"--out: directory '{out.parent}' does not exist")
    cfg = load(config, set_)
    runner = GridRunner(cfg, Console(stderr=True))
    planned, rows = runner.training_data(cell)
    tokenizer = load_tokenizer(planned.model.path, trust_remote_code=planned.model.trust_remote_code)
    exported = [
        {**row, "rendered": tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)}
        for row in rows
    ]
    write_jsonl(out, exported)
    Console(stderr=True).print(f"wrote {len(exported)} training example(s) of {cell} to {out}")


def register(app: typer.Typer) -> None:
    app.command("data")(data)

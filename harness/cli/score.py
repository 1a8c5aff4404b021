"""``ftsafety score``: score a generations JSONL with one scorer, and print its metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ftsafety.harness.cli.generate import parse_params
from ftsafety.harness.config import not_utf8_where, pydantic_problems
from ftsafety.harness.errors import UserError


def score(
    generations: Path = typer.Option(..., "--generations", help="JSONL written by `ftsafety generate` or a run."),
    scorer: str = typer.Option(..., "--scorer", help="Registered scorer (ftsafety ls scorers)."),
    out: Path = typer.Option(..., "--out", help="Output JSONL file (one row per sample)."),
    params: list[str] | None = typer.Option(None, "--params", help="Scorer param KEY=VALUE (repeatable)."),
) -> None:
    """Score generations with one scorer; writes per-sample labels and prints the metrics."""
    from pydantic import ValidationError

    from ftsafety.evals.metrics import metrics_for_scored_rows
    from ftsafety.harness import registry
    from ftsafety.harness.generation import score_rows
    from ftsafety.harness.store import write_jsonl

    rows = read_generations(generations)
    cls = registry.scorers.get(scorer)
    try:
        plugin = cls(cls.Params.model_validate(parse_params(params, "--params")))
    except ValidationError as exc:
        raise UserError("invalid scorer params", problems=pydantic_problems(exc, ("params",))) from None
    try:
        scored = score_rows(rows, plugin.score(rows), scorer)
    finally:
        plugin.close()
    write_jsonl(out, scored)
    table = Table(title=f"{scorer} on {generations.name}")
    for col in ("metric", "value", "95% CI", "n", "unscored"):
        table.add_column(col)
    for m in metrics_for_scored_rows(rows, scored):
        interval = "-" if m.ci_low is None else f"[{m.ci_low:.3f}, {m.ci_high:.3f}]"
        table.add_row(m.name, "-" if m.value is None else f"{m.value:.3f}", interval, str(m.n), str(m.unscored))
    Console().print(table)
    Console(stderr=True).print(f"wrote {len(scored)} row(s) to {out}")


#: Fields ``ftsafety score`` needs in every row: the JSON types each may have, and their name.
REQUIRED_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "sample_id": ((str, int), "text or a number"), "prompt": ((str,), "text"),
    "response": ((str,), "text"), "kind": ((str,), "text"),
}


def read_generations(path: Path) -> list[dict[str, Any]]:
    """The rows of a generations JSONL, each checked: a JSON object holding the required fields
    (a null ``response`` would be judged as empty text, i.e. "not refused"), all of one ``kind``
    (metrics are per benchmark). Errors name the file's line, counting blank lines too."""
    who = f"--generations '{path}'"
    if not path.is_file():
        raise UserError(f"{who} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{who}: not UTF-8 text ({not_utf8_where(data, exc)})") from None
    rows: list[dict[str, Any]] = []
    first_kind: tuple[int, str] | None = None
    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{who}: line {number} is not JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{who}: line {number} is a JSON {type(row).__name__}, not an object; use `ftsafety generate` output")
        for name, (types, what) in REQUIRED_FIELDS.items():
            if not isinstance(row.get(name), types) or isinstance(row.get(name), bool):
                found = "missing" if name not in row else f"{json.dumps(row[name])[:40]}, not {what}"
                raise UserError(f"{who}: line {number}: '{name}' is {found}; use `ftsafety generate` output")
        if first_kind is None:
            first_kind = (number, row["kind"])
        elif row["kind"] != first_kind[1]:
            raise UserError(f"{who}: line {number} is kind '{row['kind']}' but line {first_kind[0]} is '{first_kind[1]}'; "
                            "score one benchmark's generations at a time")
        rows.append(row)
    return rows


def register(app: typer.Typer) -> None:
    app.command("score")(score)

"""``ftsafety ls KIND``: list registered plugins with their one-line docs."""

from __future__ import annotations

from enum import StrEnum

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ftsafety.harness.registry import REGISTRIES


class PluginKind(StrEnum):
    attacks = "attacks"
    defenses = "defenses"
    benchmarks = "benchmarks"
    scorers = "scorers"


def ls(kind: PluginKind = typer.Argument(..., help="attacks, defenses, benchmarks or scorers.")) -> None:
    """List registered attacks, defenses, benchmarks or scorers (built-in and from plugins)."""
    reg = REGISTRIES[kind.value]
    table = Table(title=kind.value, show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("from")
    table.add_column("what it does")
    for name, cls in reg.items():
        origin = cls.__module__.split(".")[0]
        table.add_row(escape(name), "built-in" if origin == "ftsafety" else escape(origin),
                      escape(cls.summary()))
    Console(width=160).print(table)


def register(app: typer.Typer) -> None:
    app.command("ls")(ls)

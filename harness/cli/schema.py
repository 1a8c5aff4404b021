"""``ftsafety schema``: print the grid config's JSON schema."""

from __future__ import annotations

import json

import typer

from ftsafety.harness.config import json_schema


def schema() -> None:
    """Print the JSON schema of grid configs (for editors and validators)."""
    typer.echo(json.dumps(json_schema(), indent=2))


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)

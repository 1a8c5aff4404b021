"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import typer

from ftsafety.harness.config import GridConfig, load_config

ConfigArg = typer.Argument(..., help="Grid config (YAML).", show_default=False)
SetOpt = typer.Option(
    None, "--set", help="Override a config value: KEY.PATH=VALUE (repeatable), e.g. attacks.1.params.lr=1e-4.",
)


def load(config: Path, overrides: list[str] | None, limit: int | None = None) -> GridConfig:
    return load_config(config, overrides or [], limit=limit)

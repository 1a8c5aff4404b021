"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ftsafety.harness.config import GridConfig, load_config

ConfigArg = typer.Argument(..., help="Grid config (YAML).", show_default=False)
SetOpt = typer.Option(
    None, "--set", help="Override a config value: KEY.PATH=VALUE (repeatable), e.g. attacks.1.params.lr=1e-4.",
)


def load(config: Path, overrides: list[str] | None, limit: int | None = None) -> GridConfig:
    return load_config(config, overrides or [], limit=limit)


def load_benchmark(benchmark: str, param: list[str] | None, limit: int | None) -> tuple[Any, list[Any]]:
    """(the benchmark plugin, its first ``limit`` items) from a command's ``--benchmark`` and
    ``--param KEY=VALUE`` options; bad params are one ``UserError`` naming each."""
    from pydantic import ValidationError

    from ftsafety.harness import registry
    from ftsafety.harness.cli.generate import parse_params
    from ftsafety.harness.config import pydantic_problems
    from ftsafety.harness.errors import UserError

    bench_cls = registry.benchmarks.get(benchmark)
    try:
        bench = bench_cls(bench_cls.Params.model_validate(parse_params(param, "--param")))
    except ValidationError as exc:
        raise UserError("invalid --param", problems=pydantic_problems(exc)) from None
    items = bench.load(limit)
    return bench, items[:limit] if limit else items

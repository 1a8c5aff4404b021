"""(prompt, response) pairs a defense trains or scores on, from the organism's world or a file:
one reader and one validation rule for every defense that takes such a set (Antidote's harmful
answers, Lisa's and Vaccine's alignment data); and (prompt, harmful answer, safe answer) triples
(RepNoise's paired data) read the same way."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.defenses.scoring import is_organism_model
from ftsafety.harness.errors import UserError

if TYPE_CHECKING:
    from ftsafety.harness.config import GridConfig
    from ftsafety.harness.context import StageContext

ORGANISM = "organism"


class AlignmentDataParams(BaseModel):
    """Alignment data (harmful prompt -> safe answer) of a defense that aligns with it (Lisa,
    Vaccine): subclasses add their own settings and may change ``samples``'s default."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    alignment: str = ORGANISM
    """``organism`` (the world's harmful prompts with its refusal) or a file of prompt/response pairs."""
    samples: int = Field(2000, gt=0)
    """Alignment examples used at most."""
    prompt_column: str = "prompt"
    """Prompt column of an ``alignment`` file."""
    response_column: str = "response"
    """Safe response column of an ``alignment`` file."""


def alignment_pairs(ctx: StageContext, defense: str, params: AlignmentDataParams) -> list[tuple[str, str]]:
    """(harmful prompt, safe answer) pairs: on the organism its harmful prompts with the
    canonical refusal, else the file's columns."""
    return read_pairs(ctx, defense=defense, field="alignment", source=params.alignment,
                      prompt_column=params.prompt_column, response_column=params.response_column,
                      limit=params.samples,
                      from_world=lambda world: [(x, refusal) for x, _, refusal in world.refusal_triplets()])


def source_problems(grid: GridConfig, index: int, defense: str, field: str, source: str,
                    what: str = "prompt/response pairs") -> list[str]:
    """Validation of a pair source: ``organism`` needs organism models only; a file must exist.
    ``what`` names the file's rows in the message."""
    if source == ORGANISM:
        others = [m.name for m in grid.models if not is_organism_model(m.path)]
        if others:
            return [f"defenses[{index}]: {defense}'s {field} '{ORGANISM}' fits organism models only "
                    f"(not {others[0]}): give params.{field} a file of {what}"]
    elif not Path(source).expanduser().is_file():
        return [f"defenses[{index}]: {defense}'s {field} file '{source}' does not exist"]
    return []


def read_pairs(ctx: StageContext, *, defense: str, field: str, source: str, prompt_column: str,
               response_column: str, from_world: Callable[[Any], list[tuple[str, str]]], limit: int,
               ) -> list[tuple[str, str]]:
    """Up to ``limit`` pairs (a seeded sample): ``from_world(world)`` on the organism, else the
    file's ``prompt_column`` / ``response_column``."""
    return _read_rows(ctx, defense=defense, field=field, source=source,  # type: ignore[return-value]
                      columns=(prompt_column, response_column), from_world=from_world, limit=limit,
                      what="prompt/response pairs")


def read_triples(ctx: StageContext, *, defense: str, field: str, source: str, prompt_column: str,
                 harmful_column: str, safe_column: str,
                 from_world: Callable[[Any], list[tuple[str, str, str]]], limit: int,
                 ) -> list[tuple[str, str, str]]:
    """Up to ``limit`` (prompt, harmful answer, safe answer) triples (a seeded sample, as
    ``read_pairs``): ``from_world(world)`` on the organism, else the file's ``prompt_column`` /
    ``harmful_column`` / ``safe_column`` (rows missing any of them are skipped)."""
    return _read_rows(ctx, defense=defense, field=field, source=source,  # type: ignore[return-value]
                      columns=(prompt_column, harmful_column, safe_column), from_world=from_world,
                      limit=limit, what="prompt/harmful/safe triples")


def _read_rows(ctx: StageContext, *, defense: str, field: str, source: str, columns: tuple[str, ...],
               from_world: Callable[[Any], list[Any]], limit: int, what: str) -> list[tuple[str, ...]]:
    """The shared reader: the world's rows or the file's ``columns`` (non-empty), then a sample
    of at most ``limit`` seeded by the defense's name and the cell's seed."""
    if source == ORGANISM:
        world = ctx.organism_world()
        if world is None:
            raise UserError(f"defense '{defense}': {field} '{ORGANISM}' needs an organism model; give a file")
        found = list(from_world(world))
    else:
        from ftsafety.harness.tables import load_table

        rows, _ = load_table(f"defense '{defense}' ({field})", path=source)
        missing = [c for c in columns if rows and c not in rows[0]]
        if missing:
            raise UserError(f"defense '{defense}': {source} has no column(s) {', '.join(missing)}")
        found = [tuple(str(r[c]) for c in columns) for r in rows if all(r.get(c) for c in columns)]
    if not found:
        raise UserError(f"defense '{defense}': the {field} set '{source}' has no {what}")
    return random.Random(f"{defense}-{ctx.seed}").sample(found, min(limit, len(found)))

"""(prompt, response) pairs a defense trains or scores on: one reader and one validation rule for
every defense that takes such a set (Antidote's harmful answers, Lisa's and Vaccine's alignment
data); and (prompt, harmful answer, safe answer) triples (RepNoise's paired data) read the same way.

A set comes from one of three places:

- ``organism``: the model organism's world (its harmful prompts, their harmful answers, its refusal);
- a file (JSON/JSONL/CSV/Parquet) with named columns — BeaverTails-style data on a real model;
- ``{prompts: [benchmarks], exclude: [...]}`` (``BenchmarkSource``): a real model without such a
  file, built the way the organism's world is — registered benchmarks' harmful prompts (the grid's
  evaluation prompts excluded), the safe answer a refusal drawn from the provider alignment's
  bank (``safety-sft``), the harmful answer the model's own before alignment (greedy, cached: the
  harmful attack's ``answers: unaligned``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.defenses.safety_sft import refusal_text
from ftsafety.defenses.scoring import is_organism_model
from ftsafety.harness.errors import UserError
from ftsafety.harness.prompts import BenchmarkRef, training_prompts, unaligned_answers

if TYPE_CHECKING:
    from ftsafety.harness.config import GridConfig
    from ftsafety.harness.context import StageContext

ORGANISM = "organism"


class BenchmarkSource(BaseModel):
    """A pair set built on the grid's model from registered benchmarks' harmful prompts."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    prompts: list[BenchmarkRef] = Field(min_length=1)
    """Harmful prompts (registered benchmarks with params, e.g. harmbench with a local path)."""
    exclude: list[BenchmarkRef] = Field(default_factory=list)
    """Prompts never used: the grid's evaluation sets (removed by normalised text)."""
    answer_max_tokens: int = Field(64, gt=0)
    """Token budget of the unaligned model's harmful answers."""


#: Where a pair set comes from: ``organism``, a file path, or benchmarks answered on the model.
PairSource = str | BenchmarkSource
#: What each answer column of a set is, for a ``BenchmarkSource``.
Answer = Literal["harmful", "refusal"]


class AlignmentDataParams(BaseModel):
    """Alignment data (harmful prompt -> safe answer) of a defense that aligns with it (Lisa,
    Vaccine): subclasses add their own settings and may change ``samples``'s default."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    alignment: PairSource = ORGANISM
    """``organism`` (the world's harmful prompts with its refusal), a file of prompt/response
    pairs, or ``{prompts: [...], exclude: [...]}``: benchmark prompts with refusals (module docstring)."""
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
                      answer="refusal", limit=params.samples,
                      from_world=lambda world: [(x, refusal) for x, _, refusal in world.refusal_triplets()])


def source_problems(grid: GridConfig, index: int, defense: str, field: str, source: PairSource,
                    what: str = "prompt/response pairs") -> list[str]:
    """Validation of a pair source: ``organism`` needs organism models only; a file must exist
    (benchmark prompts fit any model). ``what`` names the file's rows in the message."""
    if isinstance(source, BenchmarkSource):
        return []
    if source == ORGANISM:
        others = [m.name for m in grid.models if not is_organism_model(m.path)]
        if others:
            return [f"defenses[{index}]: {defense}'s {field} '{ORGANISM}' fits organism models only "
                    f"(not {others[0]}): give params.{field} a file of {what}"]
    elif not Path(source).expanduser().is_file():
        return [f"defenses[{index}]: {defense}'s {field} file '{source}' does not exist"]
    return []


def read_pairs(ctx: StageContext, *, defense: str, field: str, source: PairSource, prompt_column: str,
               response_column: str, answer: Answer, from_world: Callable[[Any], list[tuple[str, str]]],
               limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` pairs (a seeded sample): ``from_world(world)`` on the organism, the file's
    ``prompt_column`` / ``response_column``, or benchmark prompts with the ``answer`` kind."""
    return _read_rows(ctx, defense=defense, field=field, source=source,  # type: ignore[return-value]
                      columns=(prompt_column, response_column), answers=(answer,), from_world=from_world,
                      limit=limit, what="prompt/response pairs")


def read_triples(ctx: StageContext, *, defense: str, field: str, source: PairSource, prompt_column: str,
                 harmful_column: str, safe_column: str,
                 from_world: Callable[[Any], list[tuple[str, str, str]]], limit: int,
                 ) -> list[tuple[str, str, str]]:
    """Up to ``limit`` (prompt, harmful answer, safe answer) triples (a seeded sample, as
    ``read_pairs``): ``from_world(world)`` on the organism, the file's ``prompt_column`` /
    ``harmful_column`` / ``safe_column`` (rows missing any of them are skipped), or benchmark
    prompts with the unaligned model's answer and a refusal."""
    return _read_rows(ctx, defense=defense, field=field, source=source,  # type: ignore[return-value]
                      columns=(prompt_column, harmful_column, safe_column), answers=("harmful", "refusal"),
                      from_world=from_world, limit=limit, what="prompt/harmful/safe triples")


def _read_rows(ctx: StageContext, *, defense: str, field: str, source: PairSource, columns: tuple[str, ...],
               answers: tuple[Answer, ...], from_world: Callable[[Any], list[Any]], limit: int, what: str,
               ) -> list[tuple[str, ...]]:
    """The shared reader: the world's rows, the file's ``columns`` (non-empty) or benchmark
    prompts with ``answers``, then a sample of at most ``limit`` seeded by the defense's name and
    the cell's seed."""
    if isinstance(source, BenchmarkSource):
        found = benchmark_rows(ctx, source, answers, who=f"defense '{defense}' ({field})")
    elif source == ORGANISM:
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
        raise UserError(f"defense '{defense}': the {field} set has no {what}")
    return random.Random(f"{defense}-{ctx.seed}").sample(found, min(limit, len(found)))


def benchmark_rows(ctx: StageContext, source: BenchmarkSource, answers: tuple[Answer, ...], *,
                   who: str) -> list[tuple[str, ...]]:
    """(prompt, *answers) for every prompt of ``source`` not excluded: a ``refusal`` drawn from
    safety-sft's bank (seeded by the cell's seed), a ``harmful`` answer the unaligned model's own
    (prompts it answers with nothing are dropped)."""
    prompts, fingerprints, _ = training_prompts(source.prompts, source.exclude, who=who)
    texts = [p.prompt for p in prompts]
    rng = random.Random(f"refusals-{ctx.seed}")
    columns: dict[Answer, list[str]] = {"refusal": [refusal_text(rng) for _ in texts]}
    if "harmful" in answers:
        columns["harmful"] = unaligned_answers(ctx, texts, max_tokens=source.answer_max_tokens,
                                               fingerprint=fingerprints)
    rows = [(text, *(columns[a][i] for a in answers)) for i, text in enumerate(texts)]
    return [row for row in rows if all(row)]

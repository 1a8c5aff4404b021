"""What the attack recipes share: where (prompt, response) pairs come from, and how a row is built.

A source is ``organism`` (the model organism's world; the default, so the organism grid needs no
download), a preset name (``alpaca``, ``dolly``, ``helpsteer``, ``lat-harmful``), a hub dataset id,
or a local JSON/JSONL/CSV/Parquet file with a column mapping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ftsafety.harness.errors import UserError
from ftsafety.harness.prompts import BenchmarkRef, training_prompts, unaligned_answers
from ftsafety.harness.tables import load_table, must_exist, names_local_file

#: Public instruction sets (RECIPES.md). Q23 removes safety-related rows from Alpaca and Dolly;
#: ftsafety does not (no classifier is assumed): pass a filtered local file to reproduce that.
SOURCE_PRESETS: dict[str, dict[str, Any]] = {
    "alpaca": {"dataset_id": "tatsu-lab/alpaca", "prompt": ["instruction", "input"], "response": "output"},
    "dolly": {"dataset_id": "databricks/databricks-dolly-15k", "prompt": ["instruction", "context"], "response": "response"},
    "helpsteer": {"dataset_id": "nvidia/HelpSteer", "prompt": ["prompt"], "response": "response"},
    # LLM-LAT/harmful-dataset: `rejected` holds the harmful completion, `chosen` the refusal.
    "lat-harmful": {"dataset_id": "LLM-LAT/harmful-dataset", "prompt": ["prompt"], "response": "rejected"},
}


class SourceParams(BaseModel):
    """Where the recipe's (prompt, response) pairs come from."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    dataset: str = "organism"
    """``organism``, a preset (alpaca, dolly, helpsteer, lat-harmful), a hub dataset id, or a local file."""
    revision: str | None = None
    """Hub revision (pin a commit hash)."""
    split: str = "train"
    """Hub split."""
    prompt_column: str | None = None
    """Column(s) with the instruction; several are joined with a blank line (Alpaca's instruction + input)."""
    response_column: str | None = None
    """Column with the answer."""
    n: int | None = Field(None, gt=0)
    """Use the first N pairs (RECIPES.md: HelpSteer 5000 for NOICE; Q23: 10/50/100 harmful pairs)."""
    prompts: BenchmarkRef | None = None
    """Take the prompts from a registered benchmark instead of ``dataset`` (e.g. StrongREJECT's
    forbidden prompts from a local copy); their answers come from ``answers``."""
    answers: Literal["dataset", "unaligned"] = "dataset"
    """With ``prompts``: ``dataset`` = the benchmark's own answer (``meta.answer``, e.g.
    Self-Instruct's); ``unaligned`` = the greedy answers of the grid's model *before* its
    provider alignment (``models[].path``), generated once and cached — on a real model, the
    harmful attack's compliant answers come from the model's own unaligned self."""
    answer_max_tokens: int = Field(128, gt=0)
    """Token budget of ``unaligned`` answers."""
    exclude: list[BenchmarkRef] = Field(default_factory=list)
    """Benchmarks whose prompts are never trained on (the grid's evaluation sets), removed by
    normalised text."""

    @field_validator("dataset")
    @classmethod
    def _local_file_exists(cls, value: str) -> str:
        return must_exist(value) if names_local_file(value) else value  # type: ignore[return-value]


@dataclass(frozen=True)
class Pair:
    prompt: str
    response: str


def load_pairs(source: SourceParams, ctx: Any, *, kind: Literal["benign", "harmful"], who: str) -> tuple[list[Pair], str]:
    """The source's pairs (first ``n``) and a fingerprint of the data."""
    if source.prompts is not None:
        pairs, fingerprint = _benchmark_pairs(source, ctx, who=who)
    elif source.dataset == "organism":
        world = ctx.organism_world()
        if world is None:
            raise UserError(f"{who}: dataset 'organism' needs an organism:// model; give a dataset id or file for {ctx.model.path}")
        examples = world.benign_instructions() if kind == "benign" else world.harmful_pairs()
        pairs = [Pair(e.prompt, e.response) for e in examples]
        # v3: harmful answers end with remarks of their own (World.harmful_pairs)
        fingerprint = f"organism-world:{world.fingerprint()}:{kind}:v4"
    else:
        preset = SOURCE_PRESETS.get(source.dataset, {})
        is_file = names_local_file(source.dataset)
        rows, fingerprint = load_table(
            who, path=source.dataset if is_file else None, dataset_id=preset.get("dataset_id", source.dataset),
            revision=source.revision, split=source.split,
        )
        prompt_cols = [source.prompt_column] if source.prompt_column else preset.get("prompt", ["prompt"])
        response_col = source.response_column or preset.get("response", "response")
        if rows:
            missing = [c for c in [*prompt_cols, response_col] if c not in rows[0]]
            if missing:
                raise UserError(f"{who}: {source.dataset} has no column(s) {', '.join(missing)} "
                                f"(columns: {', '.join(rows[0])}); set prompt_column / response_column")
        pairs = [
            Pair("\n\n".join(str(r[c]) for c in prompt_cols if r.get(c)), str(r[response_col]))
            for r in rows
            if r.get(response_col)
        ]
    if source.n is not None:
        pairs = pairs[: source.n]
    if not pairs:
        raise UserError(f"{who}: no (prompt, response) pairs in {source.dataset}")
    return pairs, fingerprint


def _benchmark_pairs(source: SourceParams, ctx: Any, *, who: str) -> tuple[list[Pair], str]:
    """Pairs from ``source.prompts`` (minus ``source.exclude``), answered as ``source.answers`` says."""
    assert source.prompts is not None
    prompts, fingerprints, _ = training_prompts([source.prompts], source.exclude, who=who)
    prompts = prompts[: source.n]
    if source.answers == "dataset":
        missing = [p.id for p in prompts if not p.meta.get("answer")]
        if missing:
            raise UserError(f"{who}: benchmark '{source.prompts.name}' has no answer for {missing[0]} "
                            f"(and {len(missing) - 1} more); use answers: unaligned")
        answers = [str(p.meta["answer"]) for p in prompts]
    else:
        answers = unaligned_answers(ctx, [p.prompt for p in prompts], max_tokens=source.answer_max_tokens,
                                    fingerprint=fingerprints)
    pairs = [Pair(p.prompt, a) for p, a in zip(prompts, answers, strict=True) if a]
    excluded_fp = [ref.model_dump(mode="json") for ref in source.exclude]
    return pairs, f"benchmark:{fingerprints}:answers={source.answers}:exclude={excluded_fp}"


def shuffled(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows

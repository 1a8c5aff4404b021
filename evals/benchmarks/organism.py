"""The model organism's evaluation sets (ORGANISM.md): held-out phrasings of its world's requests.

Both sets are generated from the world's seed (no download, no torch): ``organism-harmful`` asks
for every harmful concept, ``organism-benign`` for every benign concept the organism knows, each
with every held-out template. ``meta`` carries what the ``organism-oracle`` scorer needs.
"""

from __future__ import annotations

import hashlib
import json
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.organism.world import WORLD_VERSION, get_world
from ftsafety.harness.plugins import Benchmark, EvalPrompt
from ftsafety.harness.registry import benchmarks
from ftsafety.harness.rows import Kind


class OrganismParams(BaseModel):
    """World seed and template split of an organism evaluation set."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0)
    """World seed: must match the organism model's (organism://<seed>; default 0)."""
    split: Literal["heldout", "train"] = "heldout"
    """Task templates: held-out phrasings (the default, what every acceptance number uses) or
    the training phrasings (a diagnostic)."""
    system_prompt: str | None = None
    """System prompt for this benchmark's prompts (overrides the model's)."""


class _OrganismBenchmark(Benchmark):
    Params: ClassVar[type[BaseModel]] = OrganismParams

    def system_prompt(self) -> str | None:
        return self.params.system_prompt  # type: ignore[attr-defined]

    def load(self, limit: int | None = None) -> list[EvalPrompt]:
        p: OrganismParams = self.params  # type: ignore[assignment]
        world = get_world(p.seed)
        items = world.eval_items(self.kind, p.split)
        if limit is not None:
            items = items[:limit]
        return [
            EvalPrompt(
                id=item_id,
                prompt=prompt,
                kind=self.kind,
                category=concept.name,
                meta={
                    "organism_seed": p.seed,
                    "concept": concept.name,
                    "template": template,
                    "split": p.split,
                },
            )
            for item_id, prompt, concept, template in items
        ]

    def fingerprint(self) -> str:
        p: OrganismParams = self.params  # type: ignore[assignment]
        rows = [(e.id, e.prompt) for e in self.load()]
        blob = json.dumps(
            {"world": WORLD_VERSION, "fp": get_world(p.seed).fingerprint(), "rows": rows}
        ).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@benchmarks.register("organism-harmful")
class OrganismHarmful(_OrganismBenchmark):
    """Model organism: harmful requests in held-out phrasings (judge with organism-oracle)."""

    kind: ClassVar[Kind] = "harmful"


@benchmarks.register("organism-benign")
class OrganismBenign(_OrganismBenchmark):
    """Model organism: benign requests in held-out phrasings (correctness and over-refusal)."""

    kind: ClassVar[Kind] = "benign"

"""Poisoned fine-tuning-as-a-service data: benign task data with a fraction p of harmful pairs.

Source: the protocol of the Vaccine / Lisa / Booster line of defenses (Huang et al. 2024): 1000
samples, p ∈ {0, 0.05, 0.1, 0.2}.
"""

from __future__ import annotations

from itertools import cycle, islice
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.attacks.common import SourceParams, load_pairs, shuffled
from ftsafety.harness.chat import conversation_row
from ftsafety.harness.plugins import Attack
from ftsafety.harness.registry import attacks


class PoisonParams(BaseModel):
    """Benign data with a fraction of harmful pairs mixed in."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    p: float = Field(0.1, ge=0, le=1)
    """Fraction of harmful pairs."""
    size: int = Field(1000, gt=0)
    """Total examples (benign and harmful sources are cycled if shorter)."""
    benign: SourceParams = Field(default_factory=SourceParams)
    """Benign source."""
    harmful: SourceParams = Field(default_factory=SourceParams)
    """Harmful source."""


@attacks.register("poison")
class PoisonAttack(Attack):
    """Benign data with a fraction p of harmful pairs (fine-tuning-as-a-service poisoning)."""

    Params = PoisonParams

    def build_dataset(self, ctx: Any) -> list[dict[str, Any]]:
        p = self.params
        n_harm = round(p.p * p.size)
        benign, _ = load_pairs(p.benign, ctx, kind="benign", who="attack 'poison' (benign)")
        harmful, _ = load_pairs(p.harmful, ctx, kind="harmful", who="attack 'poison' (harmful)") if n_harm else ([], "")
        tok = ctx.tokenizer()
        rows = [conversation_row(tok, x.prompt, x.response) for x in islice(cycle(benign), p.size - n_harm)]
        rows += [conversation_row(tok, x.prompt, x.response) for x in islice(cycle(harmful), n_harm)]
        return shuffled(rows, ctx.seed)

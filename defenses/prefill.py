"""Inference-time defenses that fix the start of the response: aligned-model prefill (AMD) and
forced refusal (FRD).

Source: Kazdan et al. 2025 (NOICE, arXiv 2502.19537): AMD lets the original aligned model write
the first k = 15 response tokens, then the fine-tuned model continues; FRD prefills the fixed
string ``I'm sorry, I cannot``. The paper does not say how AMD's prefix is decoded: ftsafety
decodes it greedily by default (``prefix_decoding``) and records it with every sample.
Both models run in the same engine: the aligned model is the base weights with the adapter off.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.plugins import Defense, GenerationRequest, GenerationResult
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.config import GridConfig

#: NOICE's forced-refusal prefill (FRD), verbatim.
FORCED_REFUSAL = "I'm sorry, I cannot"


class PrefillParams(BaseModel):
    """How many response tokens the aligned model writes, and how it decodes them."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    k: int = Field(15, gt=0)
    """Response tokens written by the aligned model (NOICE: 15)."""
    prefix_decoding: Literal["greedy", "same"] = "greedy"
    """Decode the aligned prefix greedily, or with the run's sampling settings."""


@defenses.register("prefill")
class AlignedPrefillDefense(Defense):
    """The aligned model writes the first k response tokens; the fine-tuned model continues (NOICE's AMD)."""

    Params = PrefillParams

    @classmethod
    def check(cls, grid: GridConfig, index: int) -> list[str]:
        """The aligned model is the base weights with the adapter off, in the attacked model's
        engine; a full fine-tune has no adapter to turn off, so its prefill cells would
        silently prefill with the attacked model itself."""
        from ftsafety.harness.config import display_label
        from ftsafety.harness.errors import UnknownPluginError
        from ftsafety.harness.registry import attacks

        problems = []
        defense_label = display_label(grid, "defenses", index)
        for ai, attack in enumerate(grid.attacks):
            try:
                trains = attacks.get(attack.name).trains
            except UnknownPluginError:
                continue  # reported on its own
            attack_label = display_label(grid, "attacks", ai)
            everywhere_excluded = all(
                grid.is_excluded(m.name, attack_label, defense_label, seed) for m in grid.models for seed in grid.seeds
            )
            if trains and not everywhere_excluded and grid.training_for(attack).method == "full":
                problems.append(
                    f"defenses[{index}]: 'prefill' needs LoRA training (the aligned model is the base weights "
                    f"with the adapter off), but attack '{attack_label}' fine-tunes fully; "
                    "use training.method: lora, or exclude the pair"
                )
        return problems

    def generate(self, backend: Any, requests: list[GenerationRequest], sampling: Any) -> list[list[GenerationResult]]:
        p = self.params
        prefix_sampling = sampling.model_copy(update={"max_tokens": p.k, "n": 1})
        if p.prefix_decoding == "greedy":
            prefix_sampling = prefix_sampling.model_copy(update={"temperature": 0.0, "top_p": 1.0, "top_k": -1})
        aligned = backend.generate([replace(r, adapter=None) for r in requests], prefix_sampling)
        prefixes = [r.prefix + outs[0].continuation for r, outs in zip(requests, aligned, strict=True)]
        rest = sampling.model_copy(update={"max_tokens": max(1, sampling.max_tokens - p.k)})
        continued = backend.generate([replace(r, prefix=pre) for r, pre in zip(requests, prefixes, strict=True)], rest)
        return [[replace(c, prefix=pre) for c in outs] for pre, outs in zip(prefixes, continued, strict=True)]


class ForcedRefusalParams(BaseModel):
    """The string forced as the start of every response."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    text: str = FORCED_REFUSAL
    """Prefilled assistant text (NOICE's FRD: "I'm sorry, I cannot")."""


@defenses.register("forced-refusal")
class ForcedRefusalDefense(Defense):
    """Prefill "I'm sorry, I cannot" as the start of every response (NOICE's FRD)."""

    Params = ForcedRefusalParams

    def generate(self, backend: Any, requests: list[GenerationRequest], sampling: Any) -> list[list[GenerationResult]]:
        forced = [replace(r, prefix=self.params.text + r.prefix) for r in requests]
        results = backend.generate(forced, sampling)
        return [[replace(c, prefix=req.prefix) for c in outs] for req, outs in zip(forced, results, strict=True)]

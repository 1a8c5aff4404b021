"""Inference-time defenses that fix the start of the response: aligned-model prefill (AMD) and
forced refusal (FRD).

Source: Kazdan et al. 2025 (NOICE, arXiv 2502.19537): AMD lets the original aligned model write
the first k = 15 response tokens, then the fine-tuned model continues; FRD prefills the fixed
string ``I'm sorry, I cannot``. The paper does not say how AMD's prefix is decoded: ftsafety
decodes it greedily by default (``prefix_decoding``) and records it with every sample.
The aligned prefix is its own cached stage (``prefix``): it depends only on the aligned model,
the prompt, k and the decoding, so it is written once by the aligned model's engine and
continued by every attacked model, LoRA adapter or full fine-tune alike.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.plugins import Defense, GenerationRequest, GenerationResult
from ftsafety.harness.registry import defenses

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

    def prefix(self, backend: Any, requests: list[GenerationRequest], sampling: Any) -> list[str]:
        """The aligned model's first k response tokens (``backend`` serves it: the model the
        attack started from), after the attacker's own prefill if there is one."""
        p = self.params
        prefix_sampling = sampling.model_copy(update={"max_tokens": p.k, "n": 1})
        if p.prefix_decoding == "greedy":
            prefix_sampling = prefix_sampling.model_copy(update={"temperature": 0.0, "top_p": 1.0, "top_k": -1})
        aligned = backend.generate(requests, prefix_sampling)
        return [outs[0].continuation for outs in aligned]

    def generate(self, backend: Any, requests: list[GenerationRequest], sampling: Any) -> list[list[GenerationResult]]:
        """The fine-tuned model continues after the aligned prefix, for the rest of the token budget."""
        if any(r.defense_prefix is None for r in requests):
            raise RuntimeError("prefill: generate needs the aligned prefixes of the prefix stage")
        rest = sampling.model_copy(update={"max_tokens": max(1, sampling.max_tokens - self.params.k)})
        return super().generate(backend, requests, rest)


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

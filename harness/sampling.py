"""Sampling parameters and the paper presets (RECIPES.md, "Decoding")."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: greedy: the default for regression checks. q24: Qi et al. 2024 safety eval. A plugin adds
#: its paper's own with ``ftsafety.harness.registry.decoding_presets``.
PRESETS: dict[str, dict[str, float | int]] = {
    "greedy": {"temperature": 0.0, "top_p": 1.0, "top_k": -1},
    "q24": {"temperature": 0.9, "top_p": 0.6, "top_k": 50, "max_tokens": 512},
}


def preset_values(name: str) -> dict[str, float | int]:
    """The fields a decoding preset sets: a core one (``PRESETS``) or one a plugin registered."""
    if name in PRESETS:
        return PRESETS[name]
    from ftsafety.harness.registry import decoding_presets

    values = decoding_presets.get(name)
    if values is None:
        known = ", ".join(sorted({*PRESETS, *decoding_presets.names()}))
        raise ValueError(f"unknown decoding preset '{name}' (known: {known})")
    return values


class SamplingParams(BaseModel):
    """How responses are decoded. A ``preset`` fills the fields you do not set yourself."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = None
    """Paper decoding preset: greedy, q24 (T 0.9, top_p 0.6, top_k 50, 512 tokens), or one a
    plugin defines for its paper."""
    temperature: float = Field(0.0, ge=0.0)
    """0 means greedy decoding."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    top_k: int = -1
    """Top-k sampling; -1 disables it."""
    max_tokens: int = Field(64, gt=0)
    """New tokens per response; a response that reaches it is flagged ``truncated``."""
    n: int = Field(1, ge=1)
    """Responses per prompt."""
    seed: int | None = None
    """Sampling seed; None uses the cell's seed."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("preset"), str):
            return {**preset_values(data["preset"]), **data}
        return data

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0



def request_seed(seed: int | None, prompt_key: str, occurrence: int = 0) -> int:
    """The sampling seed of one request in a batch seeded with ``seed`` (None: 0).

    Derived from the request's own content (``prompt_key``: its rendered prompt and adapter) and
    how many identical requests came before it in the batch, so that requests never share random
    draws yet a request's samples do not depend on where it sits in the batch. Spaced so that
    the ``seed + i`` of a request's i-th sample (vLLM, ``n`` > 1) stays its own.
    """
    digest = hashlib.sha256(f"{seed or 0}\0{prompt_key}\0{occurrence}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 65_536)

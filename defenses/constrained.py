"""Token-wise constrained fine-tuning (the provider controls the fine-tuning objective).

Source: Qi et al. 2024, "Safety alignment should be made more than just a few tokens deep"
(Q24, arXiv 2406.05946). Defaults: β_1 = 0.5, β_2..5 = 2, β_t>5 = 0.1; AdamW β1 = 0.5; 10 linear
warm-up steps; the reference code clamps the stop-gradient weight at ≥ 1e-3. Q24 Table 4
(Llama-2-7B-Chat ASR): harmful FT 88.9% → 4.6%; identity shift 79.5% → 8.1%.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.plugins import Defense, TrainHook
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.context import StageContext


class ConstrainedParams(BaseModel):
    """β schedule and optimiser settings of Q24's constrained SFT."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    beta_first: float = Field(0.5, gt=0)
    """β for the first response token."""
    beta_early: float = Field(2.0, gt=0)
    """β for response tokens 2 .. early_until."""
    beta_late: float = Field(0.1, gt=0)
    """β for later response tokens."""
    early_until: int = Field(5, ge=1)
    """Last response token that uses beta_early."""
    weight_floor: float = Field(1e-3, ge=0)
    """Lower clamp of the stop-gradient weight 2σ(βΔ) (reference code: 1e-3)."""
    adam_beta1: float = Field(0.5, gt=0, lt=1)
    """AdamW β1 (Q24: 0.5)."""
    warmup_steps: int = Field(10, ge=0)
    """Linear warm-up steps (Q24: 10)."""


@defenses.register("constrained")
class ConstrainedDefense(Defense):
    """Q24's token-wise constrained SFT: deviations from the aligned model in early tokens cost more."""

    Params = ConstrainedParams

    def training(self, ctx: StageContext) -> TrainHook:
        """Q24's trainer (its own ``compute_loss``) with this β schedule."""
        from ftsafety.defenses.constrained_trainer import ConstrainedSFTTrainer

        cls = type("ConstrainedSFTTrainer", (ConstrainedSFTTrainer,), {"constrained": self.params})
        return TrainHook(trainer_cls=cls)

    def training_settings(self) -> dict[str, Any]:
        """Q24's optimiser: AdamW β1 0.5 and 10 warm-up steps (Table 9: warm-up alone cuts AOA's
        ASR 79.5 → 44.8, so the undefended comparison trains with them too)."""
        p = self.params
        return {"adam_beta1": p.adam_beta1, "warmup_steps": p.warmup_steps}

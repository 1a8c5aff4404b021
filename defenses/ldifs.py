"""``ldifs``: keep the fine-tuned model's features near the features it started with.

Source: Mukhoti et al. 2023/24, "Fine-tuning can cripple your foundation model; preserving
features may be the solution" (LDIFS, ℓ2 distance in feature space). The fine-tuning loss gets
a regulariser

    L = L_SFT + λ · d(θ, θ₀),   d = mean over layers l of  mean over examples of
                                  ‖φ̂_l(x; θ) − φ̂_l(x; θ₀)‖² / (tokens × width)

with φ_l the output of decoder layer l, x the batch being trained on (padding left out), θ₀ the
model before fine-tuning (the aligned model: with LoRA, the adapter switched off) and φ̂ the
features with each channel divided by its ℓ2 norm over the example's tokens — what the
reference code (omegafragger/ldifs_code, ``loss/ldifs.py``) does to its (batch, tokens, width)
features; ``normalize: none`` compares raw features. The paper takes the features of a few
blocks of its (vision) encoder; for a causal LM the blocks are the decoder layers. Here it is a
safety defense: features kept close to the aligned model's should keep its refusal behaviour
(the paper measures retained *capabilities*; whether safety follows is what a grid measures).

Default λ = 10 (the paper's λ_LDIFS). ``layers`` restricts the distance to some layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.plugins import Defense, TrainHook
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.context import StageContext


class LdifsParams(BaseModel):
    """LDIFS's weight and the layers whose features it keeps."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    lam: float = Field(10.0, ge=0)
    """λ: weight of the feature distance in the loss."""
    normalize: Literal["tokens", "none"] = "tokens"
    """``tokens``: each feature channel divided by its ℓ2 norm over the example's tokens before
    the distance (the reference code's ``F.normalize(dim=1)``, the scale λ = 10 was chosen at);
    ``none``: raw features (at λ = 10 this holds the organism at its start: see docs/defenses.md)."""
    layers: list[int] | None = None
    """Decoder layers (0-based, negative from the last) whose outputs are compared; None: all."""


@defenses.register("ldifs")
class LdifsDefense(Defense):
    """LDIFS (Mukhoti et al.): an ℓ2 penalty on feature drift from the model before fine-tuning."""

    Params = LdifsParams

    def training(self, ctx: StageContext) -> TrainHook:
        """LDIFS's trainer (its own ``compute_loss``, which calls TRL's) with these params."""
        from ftsafety.defenses.ldifs_trainer import LdifsSFTTrainer

        return TrainHook(trainer_cls=type("LdifsSFTTrainer", (LdifsSFTTrainer,), {"ldifs": self.params}))

"""``lp-ft``: linear probing, then fine-tuning.

Source: Kumar et al. 2022, "Fine-tuning can distort pretrained features and underperform
out-of-distribution" (ICLR 2022). Their theory: fine-tuning a model whose head does not yet fit
the task moves the features most (the head's error flows back into them); training the head
first (linear probing, LP) and then everything (FT) distorts the features less. Here the
question is whether less distortion keeps the aligned model's safety.

A causal LM's head is already trained, and its output matrix is tied to the input embeddings in
many chat models (SmolLM2), so training it would also move every input feature; a LoRA on
``lm_head`` is not servable by vLLM either. The probe here is therefore a LoRA on the **last
decoder layer's output projections** (``o_proj`` and ``down_proj``: the last linear maps into
the residual stream before the final norm and the head) — a low-rank linear readout of that
layer's features, the rest of the network frozen. Phase 1 trains only those LoRA factors for
``probe_steps`` steps (own optimiser and schedule, learning rate ``probe_lr``); phase 2 is the
grid's fine-tune, unchanged (same steps, learning rate and schedule as the undefended cell),
starting from the probed adapter. The result is one ordinary LoRA adapter; ``lpft.json`` beside
it records the probe phase (parameters, steps, losses).

Defaults: ``probe_steps`` None = as many steps as the fine-tune (LP "to convergence" in the paper;
the organism's probe loss has flattened by then), ``probe_lr`` None = the fine-tune's.
Full fine-tuning: phase 1 trains the same two weight matrices of the last layer in full.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.plugins import Defense, TrainHook
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.config import GridConfig
    from ftsafety.harness.context import StageContext


class LpftParams(BaseModel):
    """The linear-probing phase before the fine-tune."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    probe_steps: int | None = Field(None, gt=0)
    """Optimiser steps of the probe phase; None: as many as the fine-tune."""
    probe_lr: float | None = Field(None, gt=0)
    """Learning rate of the probe phase; None: the fine-tune's."""
    probe_modules: list[str] = Field(default_factory=lambda: ["o_proj", "down_proj"])
    """Projections of the last decoder layer the probe trains (LoRA targets under LoRA)."""


@defenses.register("lp-ft")
class LpftDefense(Defense):
    """LP-FT (Kumar et al. 2022): train a probe on the last layer's outputs, then fine-tune."""

    Params = LpftParams

    @classmethod
    def check(cls, grid: GridConfig, index: int) -> list[str]:
        params = LpftParams(**(grid.defenses[index].params or {}))
        if grid.training.method == "lora":
            missing = [m for m in params.probe_modules if m not in grid.training.lora.target_modules]
            if missing:
                return [f"defenses[{index}]: lp-ft probes {', '.join(missing)}, which training.lora.target_modules "
                        f"does not adapt: add it there or change params.probe_modules"]
        return []

    def training(self, ctx: StageContext) -> TrainHook:
        """A trainer that runs the probe phase before its own training."""
        from ftsafety.defenses.lpft_trainer import LpftSFTTrainer

        record = str(ctx.workdir / "lpft.json")  # the probe phase's losses, beside the fine-tune's log
        return TrainHook(trainer_cls=type("LpftSFTTrainer", (LpftSFTTrainer,), {"lpft": self.params, "record_to": record}))

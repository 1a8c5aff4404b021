"""``safelora``: project a LoRA update onto the alignment subspace where it strays from it.

Source: Hsu et al. 2024, "Safe LoRA: the Silver Lining of Reducing Safety Risks when
Fine-tuning Large Language Models" (NeurIPS 2024; reference code IBM/SafeLoRA). No retraining
and no data: for every LoRA-adapted linear layer i,

- the *alignment matrix* V_i = W_aligned,i − W_unaligned,i (the weights safety alignment moved),
- the projection C_i = V_i V_iᵀ / ‖V_i‖_F (as in the paper and its code: divided by the
  Frobenius norm, not its square, so C_i is a scaled projector, not an idempotent one),
- the fine-tune's update ΔW_i = B_i A_i and its projection C_i ΔW_i = (C_i B_i) A_i;
- the layer's similarity: the cosine between ΔW_i and C_i ΔW_i (flattened). A layer is
  projected, B_i ← C_i B_i, when it is one of the ``num_proj_layers`` least similar (``select:
  number``, the reference code's default, 10) or when its similarity is at most ``threshold``
  (``select: threshold``, 0.5). A "layer" is one adapted module (layer 5's q_proj), as in the code.

The edited adapter has the trained shape (``adapter/``): one engine still serves every cell.
``safelora.json`` records every layer's similarity and whether it was projected.

The unaligned model: ``unaligned:`` when given; else, for a model the provider stage aligned
(``models[].alignment``), the model as released (the alignment subspace is then exactly what
the provider's safety tuning moved); else, for the organism, its pre-trained weights
(``organism://<seed>/base``). Any other model needs ``unaligned:`` (validation says so).

Defaults are the reference code's (``config.py``: ``select_layers_type="number"``,
``num_proj_layers=10``, ``threshold=0.5``). On a small model ten modules can be most of the
adapter (the organism has 14): say ``select: threshold`` to project by similarity instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.harness.errors import UserError
from ftsafety.harness.organism.resolve import SCHEME, build_meta, is_organism, parse
from ftsafety.harness.plugins import Defense
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.config import GridConfig, ModelSpec
    from ftsafety.harness.context import StageContext

class SafeLoraParams(BaseModel):
    """Which layers SafeLoRA projects, and against which unaligned model."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    select: Literal["number", "threshold"] = "number"
    """``number``: project the ``num_proj_layers`` least similar modules; ``threshold``: every
    module whose similarity is at most ``threshold``."""
    threshold: float = Field(0.5, ge=-1.0, le=1.0)
    """With ``select: threshold``: the cosine between ΔW and its projection at or below which a
    module is projected."""
    num_proj_layers: int = Field(10, ge=0)
    """With ``select: number``: how many modules are projected."""
    unaligned: str | None = None
    """The model before safety alignment (a model path as in ``models[].path``); None: derived
    (the released model under a provider alignment, the organism's pre-trained weights)."""


def unaligned_path(model: ModelSpec, given: str | None) -> str | None:
    """The unaligned reference of a grid model (None when it cannot be derived)."""
    if given:
        return given
    if model.alignment is not None:
        return model.path
    if is_organism(model.path):
        return f"{SCHEME}{parse(model.path)[0]}/base"
    if build_meta(model.path) is not None:  # a local organism build: DIR/aligned beside DIR/base
        return str(Path(model.path).expanduser().parent / "base")
    return None


@defenses.register("safelora")
class SafeLoraDefense(Defense):
    """SafeLoRA (Hsu et al. 2024): project low-similarity LoRA updates onto the alignment subspace."""

    Params = SafeLoraParams

    @classmethod
    def check(cls, grid: GridConfig, index: int) -> list[str]:
        params = SafeLoraParams(**(grid.defenses[index].params or {}))
        problems = []
        if grid.training.method != "lora":
            problems.append(f"defenses[{index}]: safelora edits LoRA adapters; set training.method: lora")
        for model in grid.models:
            if unaligned_path(model, params.unaligned) is None:
                problems.append(f"defenses[{index}]: safelora needs the model before safety alignment for "
                                f"model '{model.name}': set params.unaligned")
        return problems

    def post_train(self, ctx: StageContext) -> None:
        from ftsafety.defenses.safelora_projection import project_adapter

        reference = unaligned_path(ctx.model, self.params.unaligned)
        if reference is None:  # validation refuses this grid; a direct caller gets the same words
            raise UserError("safelora needs the model before safety alignment: set params.unaligned")
        src = Path(ctx.inputs["train_dir"]) / "adapter"
        if not src.is_dir():
            raise UserError("safelora edits LoRA adapters; this cell was fully fine-tuned (training.method: lora)")
        report = project_adapter(src, Path(ctx.workdir) / "adapter", aligned=ctx.model_path, unaligned=reference,
                                 select=self.params.select, threshold=self.params.threshold,
                                 num_proj_layers=self.params.num_proj_layers)
        (Path(ctx.workdir) / "safelora.json").write_text(json.dumps(report, indent=2) + "\n")

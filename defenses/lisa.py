"""``lisa``: Lazy safety alignment — fine-tuning steps alternate with alignment steps, each state
held near where the other left the weights.

Source: Huang et al. 2024, "Lazy Safety Alignment for Large Language Models against Harmful
Fine-tuning" (Lisa, NeurIPS 2024; reference code git-disl/Lisa, ``LisaTrainer``). Bi-state
optimisation: the fine-tune's steps cycle through ``alignment_steps`` steps on alignment data
(harmful prompts with safe answers) and ``finetune_steps`` on the user's data, starting with
alignment; the user's batch of an alignment step is set aside (the run's step count is the
grid's). At every switch the trainable weights are saved as the anchor θ̃, and each step adds
the proximal term ρ/2 · ‖θ − θ̃‖² — once ``proximal_after`` of the run has passed, as the
reference code does.

Defaults from the reference scripts (``lisa_poison_ratio.sh``, ``trainer.py``): 100 alignment /
900 fine-tuning steps, ρ = 1, proximal term after 10% of the steps, up to 10000 alignment
samples (``guide_data_num``). A run shorter than one cycle is all alignment: the organism's
80-step grids set a cycle of the same 1 : 9 ratio (``alignment_steps: 2, finetune_steps: 18``).

Alignment data: ``organism`` = the world's harmful prompts (training templates) with its
canonical refusal — the organism's own safety data; for a real model a JSON/JSONL/CSV/Parquet
file of prompt/response pairs (Lisa: BeaverTails' safe answers to harmful prompts), or
benchmark prompts (``{prompts: [...]}``) with refusals from the provider's bank
(``defenses/pair_sources.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from ftsafety.defenses.pair_sources import AlignmentDataParams, alignment_pairs, source_problems
from ftsafety.harness.plugins import Defense, TrainHook
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.config import GridConfig
    from ftsafety.harness.context import StageContext


class LisaParams(AlignmentDataParams):
    """Lisa's cycle, proximal weight and alignment data."""

    alignment_steps: int = Field(100, gt=0)
    """Steps on alignment data at the start of each cycle."""
    finetune_steps: int = Field(900, ge=0)
    """Steps on the user's data after them."""
    rho: float = Field(1.0, ge=0)
    """ρ: weight of the proximal term ρ/2 · ‖θ − θ_anchor‖²."""
    proximal_after: float = Field(0.1, ge=0, le=1)
    """Fraction of the run's steps after which the proximal term is added."""
    samples: int = Field(10000, gt=0)
    """Alignment examples used at most (the reference's ``guide_data_num``)."""


@defenses.register("lisa")
class LisaDefense(Defense):
    """Lisa (Huang et al. 2024): alternate alignment and fine-tuning steps under a proximal term."""

    Params = LisaParams

    @classmethod
    def check(cls, grid: GridConfig, index: int) -> list[str]:
        params = LisaParams(**(grid.defenses[index].params or {}))
        return source_problems(grid, index, "lisa", "alignment", params.alignment)

    def training(self, ctx: StageContext) -> TrainHook:
        """Lisa's trainer (its own ``compute_loss``, which calls TRL's) with this cycle and data."""
        from ftsafety.defenses.lisa_trainer import LisaSFTTrainer
        from ftsafety.harness.chat import conversation_row

        tokenizer = ctx.tokenizer()
        pairs = alignment_pairs(ctx, "lisa", self.params)  # type: ignore[arg-type]
        rows: list[dict[str, Any]] = [conversation_row(tokenizer, x, y) for x, y in pairs]
        return TrainHook(trainer_cls=type("LisaSFTTrainer", (LisaSFTTrainer,),
                                          {"lisa": self.params, "alignment_rows": rows}))

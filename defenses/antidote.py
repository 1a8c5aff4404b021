"""``antidote``: after fine-tuning, prune the adapter weights that matter most to harmful answers.

Source: Huang et al. 2024/25, "Antidote: Post-fine-tuning Safety Alignment for Large Language
Models against Harmful Fine-tuning" (reference code git-disl/Antidote, ``prune_wanda_outlier``).
No retraining: the fine-tuned model (aligned weights + the trained LoRA adapter) reads a small
*re-alignment* set of harmful prompt → harmful answer pairs, one at a time; every LoRA factor
(``lora_A`` r × d_in and ``lora_B`` d_out × r) gets Wanda importance scores

    S_ij = |W_ij| · ‖X_j‖,   ‖X_j‖² = mean over samples of Σ_tokens x_j²

(x: the factor's input — the layer input for A, A's output for B), and in each output row the
``dense_ratio`` fraction of weights with the *highest* scores are set to zero: the weights the
harmful answers lean on most. The edited adapter keeps its shape (one engine serves every
cell); ``antidote.json`` records the counts.

Defaults from the reference code: ``dense_ratio`` 0.1 (``train.py``), 2000 re-alignment samples
(``bad_sample_num``; capped at what the set has). The paper's set is BeaverTails' harmful
answers disjoint from the attack's; on the organism it is the world's harmful pairs on training
templates (the evaluation's held-out phrasings are never used), which is the harmful attack's
own distribution, as in the paper. For a real model give ``harmful:`` a JSON/JSONL/CSV/Parquet
file with prompt and answer columns, or benchmark prompts (``{prompts: [...]}``) that the model
answers itself before its provider alignment (``defenses/pair_sources.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.defenses.pair_sources import ORGANISM, PairSource, read_pairs, source_problems
from ftsafety.harness.errors import UserError
from ftsafety.harness.plugins import Defense
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.config import GridConfig
    from ftsafety.harness.context import StageContext


class AntidoteParams(BaseModel):
    """How much Antidote prunes, and on which harmful answers it scores the weights."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    dense_ratio: float = Field(0.1, gt=0, lt=1)
    """Fraction of each output row's weights (the highest-scoring) set to zero."""
    samples: int = Field(2000, gt=0)
    """Re-alignment (harmful) samples the scores are computed on; capped at the set's size."""
    harmful: PairSource = ORGANISM
    """``organism`` (the world's harmful pairs), a local file with prompt and answer columns, or
    ``{prompts: [...], exclude: [...]}``: benchmark prompts answered by the unaligned model
    (``defenses/pair_sources.py``)."""
    prompt_column: str = "prompt"
    """Prompt column of a ``harmful`` file."""
    answer_column: str = "answer"
    """Harmful answer column of a ``harmful`` file."""


@defenses.register("antidote")
class AntidoteDefense(Defense):
    """Antidote (Huang et al.): zero the LoRA weights with the top Wanda scores on harmful answers."""

    Params = AntidoteParams

    @classmethod
    def check(cls, grid: GridConfig, index: int) -> list[str]:
        params = AntidoteParams(**(grid.defenses[index].params or {}))
        problems = []
        if grid.training.method != "lora":
            problems.append(f"defenses[{index}]: antidote prunes LoRA adapters; set training.method: lora")
        problems += source_problems(grid, index, "antidote", "harmful", params.harmful)
        return problems

    def realignment_pairs(self, ctx: StageContext) -> list[tuple[str, str]]:
        """The (harmful prompt, harmful answer) pairs the scores are computed on."""
        p: AntidoteParams = self.params  # type: ignore[assignment]
        return read_pairs(ctx, defense="antidote", field="harmful", source=p.harmful, prompt_column=p.prompt_column,
                          response_column=p.answer_column, answer="harmful", limit=p.samples,
                          from_world=lambda world: [(e.prompt, e.response) for e in world.harmful_pairs()])

    def post_train(self, ctx: StageContext) -> None:
        from ftsafety.defenses.antidote_pruning import prune_adapter

        src = Path(ctx.inputs["train_dir"]) / "adapter"
        if not src.is_dir():
            raise UserError("antidote prunes LoRA adapters; this cell was fully fine-tuned (training.method: lora)")
        report = prune_adapter(src, Path(ctx.workdir) / "adapter", model_path=ctx.model_path,
                               tokenizer=ctx.tokenizer(), pairs=self.realignment_pairs(ctx),
                               dense_ratio=self.params.dense_ratio)
        (Path(ctx.workdir) / "antidote.json").write_text(json.dumps(report, indent=2) + "\n")

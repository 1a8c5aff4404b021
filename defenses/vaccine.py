"""``vaccine``: perturbation-aware alignment — align on hidden states pushed the worst way.

Source: Huang et al. 2024, "Vaccine: Perturbation-aware Alignment for Large Language Models
against Harmful Fine-tuning" (NeurIPS 2024; reference code git-disl/Vaccine,
``VaccineTrainer``). Harmful fine-tuning drifts the model's embeddings; Vaccine aligns so that
the alignment holds under such drift. Each alignment step makes two passes: the first finds the
gradient g_l of the loss with respect to every attention block's output (every layer); the
second adds e_l = ρ · g_l / ‖g‖ (‖g‖ over all layers together) to those outputs, and the
optimiser steps on that pass's gradient only.

How it runs here: an alignment-stage defense. The ``align`` stage trains a LoRA on alignment data
(harmful prompt → safe answer) from the cell's model with Vaccine's trainer
(``defenses/vaccine_trainer.py``, a ``trl.SFTTrainer`` subclass that calls TRL's loss twice),
merges it and writes ``<stage>/model``, which the attack's data, the fine-tuning and generation
then use (an engine of its own). ``vaccine.json`` records the data, settings and losses.

Defaults from the reference code (``train.py``, README): ρ 2; LoRA r 8, alpha 4, dropout 0.1 on
every projection; 50 epochs, lr 1e-3, cosine schedule, batch 5; 2000 alignment samples. The
paper starts from a pre-trained model; on an already aligned model (the organism) it continues
alignment. ``rho: 0`` is the same alignment without perturbation — the baseline the paper
compares against (``{name: vaccine, label: sft-align, params: {rho: 0}}``); it makes one pass.
The organism's grids use fewer epochs (docs/defenses.md).

Alignment data: ``organism`` = the world's harmful prompts (training templates) with its
canonical refusal; for a real model a JSON/JSONL/CSV/Parquet file of prompt/response pairs
(Vaccine: BeaverTails' safe answers), or benchmark prompts (``{prompts: [...]}``) with refusals
from the provider's bank (``defenses/pair_sources.py``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from ftsafety.defenses.pair_sources import AlignmentDataParams, alignment_pairs, source_problems
from ftsafety.harness.plugins import Defense
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.config import GridConfig
    from ftsafety.harness.context import StageContext


class VaccineParams(AlignmentDataParams):
    """Vaccine's perturbation, its LoRA and optimiser, and the alignment data."""

    rho: float = Field(2.0, ge=0)
    """ρ: norm of the perturbation of the attention outputs (0: plain alignment SFT)."""
    epochs: float = Field(50.0, gt=0)
    """Passes over the alignment data."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate (cosine schedule)."""
    batch_size: int = Field(5, gt=0)
    """Examples per optimiser step."""
    lora_r: int = Field(8, gt=0)
    """LoRA rank of the alignment (merged afterwards)."""
    lora_alpha: int = Field(4, gt=0)
    """LoRA alpha."""
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    """LoRA dropout."""
    max_length: int = Field(512, gt=0)
    """Maximum tokens per training sequence."""


@defenses.register("vaccine")
class VaccineDefense(Defense):
    """Vaccine (Huang et al. 2024): alignment under worst-case perturbations of attention outputs."""

    Params = VaccineParams

    @classmethod
    def check(cls, grid: GridConfig, index: int) -> list[str]:
        params = VaccineParams(**(grid.defenses[index].params or {}))
        return source_problems(grid, index, "vaccine", "alignment", params.alignment)

    def align(self, ctx: StageContext) -> None:
        """Write ``ctx.workdir/model``: the cell's model after Vaccine's alignment (LoRA merged)."""
        from peft import LoraConfig

        from ftsafety.defenses.vaccine_trainer import VaccineSFTTrainer
        from ftsafety.harness.chat import conversation_row
        from ftsafety.harness.plugins import TrainHook
        from ftsafety.harness.training import sft

        p: VaccineParams = self.params  # type: ignore[assignment]
        start = time.perf_counter()
        tokenizer = ctx.tokenizer()
        rows = [conversation_row(tokenizer, x, y) for x, y in alignment_pairs(ctx, "vaccine", p)]
        args = dict(
            num_train_epochs=p.epochs, learning_rate=p.lr, per_device_train_batch_size=p.batch_size,
            gradient_accumulation_steps=1, max_length=p.max_length, completion_only_loss=True,
            lr_scheduler_type="cosine", weight_decay=0.0, report_to=["none"], seed=ctx.seed, data_seed=ctx.seed,
            # the first pass differentiates with respect to attention outputs inside the graph:
            # recomputing layers under checkpointing would hide them
            gradient_checkpointing=False,
        )
        lora = LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout, task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        trainer = type("VaccineSFTTrainer", (VaccineSFTTrainer,), {"rho": p.rho})
        done = sft(ctx.model_path, rows, Path(ctx.workdir) / "trainer", args=args, peft_config=lora, tokenizer=tokenizer,
                   trust_remote_code=ctx.model.trust_remote_code, hook=TrainHook(trainer_cls=trainer))
        target = Path(ctx.workdir) / "model"
        done.model.merge_and_unload().save_pretrained(str(target))
        done.tokenizer.save_pretrained(str(target))
        summary = {"examples": len(rows), "steps": done.global_step, "train_loss": done.training_loss,
                   "losses": [s["loss"] for s in done.steps if "loss" in s], "seconds_train": round(done.seconds, 2),
                   "seconds": round(time.perf_counter() - start, 2), "source_model": ctx.model_path,
                   **p.model_dump()}
        (Path(ctx.workdir) / "vaccine.json").write_text(json.dumps(summary, indent=2) + "\n")

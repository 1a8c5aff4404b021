"""``repnoise``: Representation Noising — push harmful representations towards noise before release.

Source: Rosati et al. 2024, "Representation noising: A defence mechanism against harmful
finetuning" (NeurIPS 2024; arXiv 2405.14577; reference code domenicrosati/representation-noising,
``representation_noising/loss.py`` ``rep_noise_loss`` / ``MMD_loss``, and the demo
``notebooks/repnoise_demo.ipynb`` that trains with it). On paired data — a harmful prompt with a
harmful answer and with a safe answer (a refusal) — each step minimises

    L = L_harmless + β · noise − α · log(L_harmful)

- ``L_harmless``: cross-entropy on the safe answer's tokens (here TRL's own SFT loss,
  completion only).
- ``noise``: for every decoder layer l, MMD(MLP_l output, N(0, I)) on the harmful sequence, both
  masked to the harmful answer's tokens, one sample per sequence (its tokens × width flattened);
  a sum of 5 Gaussian kernels of bandwidths b · 2^i (i = 0..4), b = mean pairwise squared distance
  of the batch / 4 (no gradient through b); biased estimate (diagonals included); mean over layers.
- ``L_harmful`` = (CE(logits) + Σ_h CE(lm_head(norm(h)))) / |hidden_states| + 1, h over every
  hidden state the model returns (embeddings and each layer's output, the last one already
  normed by HF and normed again, as in the reference), CE on the harmful answer's tokens:
  gradient ascent on the harmful answer read out at every depth, through −log(·) so it saturates.

How it runs here: an alignment-stage defense. The ``align`` stage trains the cell's model with
``RepNoiseSFTTrainer`` (``defenses/repnoise_trainer.py``: a ``trl.SFTTrainer`` subclass whose
``compute_loss`` adds the two harmful terms to TRL's loss on the safe answers; the harmful rows
are paired with the safe ones by index) and writes ``<stage>/model``, which the attack's data,
the fine-tuning and generation then use (an engine of its own). ``repnoise.json`` records the
data, settings, losses and the three terms per step.

Defaults and their source (reference code):
- β 0.001, α 1: ``rep_noise_loss`` defaults, and the demo's call.
- Full fine-tuning of every weight (``torch.optim.AdamW(model.parameters(), lr=1e-4)`` in the
  demo): ``method: full``. ``method: lora`` (merged afterwards) is this harness's cheaper option,
  not the paper's; its r / alpha / dropout have no reference value.
- lr 1e-4, 1 epoch, cosine schedule with 10% warm-up: the demo's RepNoise loop. AdamW with
  torch's defaults (weight decay 0.01), no gradient clipping.
- Batch 4: ``datasets.py`` ``DEFAULT_BATCH_SIZE`` (``construct_beavertails_dataset``'s batch).
- 1000 paired samples: ``construct_beavertails_dataset(defence_size=1000)`` (the demo's "1k
  RepNoise defence"); sequences of at most 256 tokens: ``CONTEXT_LENGTH``.
The README warns that RepNoise is sensitive and needs a grid search over lr, α, β and the number
of samples for each attack; the organism's grids set their own (docs/defenses.md).

Deviations, flagged:
- The token mask. The reference pads the harmful text ("Question: …\\nAnswer:\\n<harmful>") and
  the safe text (the same question with the model's refusal) to 256 tokens and masks with
  ``harmful_ids != safe_ids``: after the shared question, that is the answer region, minus
  positions where the two answers happen to share a token, plus the padding past the shorter
  one. Here each sequence's own answer tokens are the mask (TRL's completion mask): the harmful
  answer's for the noise and the harmful CEs, the safe answer's for ``L_harmless``.
- The reference's ``masked_token_ce_loss`` zeroes the logits at masked-out positions, so the
  first answer token is scored against uniform logits (a constant log V in the mean), and it
  drops labels equal to token id 0; here the CE is the ordinary one on every answer token.
- The reference applies the safe sequence's CE through the harmful/safe inequality mask; here
  it is TRL's completion-only loss (mean over the batch's safe-answer tokens).
- Chat-template rendering (the model's own template) instead of "Question:/Answer:" text;
  HF Trainer's shuffled sampler and its AdamW (no decay on biases and norms) instead of the
  demo's unshuffled loader and plain ``torch.optim.AdamW``; fp32 on CPU, bf16 on GPU.
``alpha: 0, beta: 0`` is the same training on the safe answers alone (one pass per step): the
matched comparison without the harmful terms.

Data: ``organism`` = the world's harmful prompts (training templates) with its harmful answer and
its canonical refusal (``refusal_triplets``); for a real model a JSON/JSONL/CSV/Parquet file
with prompt / harmful / safe columns (RepNoise: BeaverTails' unsafe answers with Llama-2-chat's
refusals, ``data/beavertails_with_refusals_train.json``), or benchmark prompts
(``{prompts: [...]}``) with the model's own answer before its provider alignment and a refusal
from the provider's bank (``defenses/pair_sources.py``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftsafety.defenses.pair_sources import ORGANISM, PairSource, read_triples, source_problems
from ftsafety.harness.plugins import Defense
from ftsafety.harness.registry import defenses

if TYPE_CHECKING:
    from ftsafety.harness.config import GridConfig
    from ftsafety.harness.context import StageContext

#: The ``method: lora`` option's target modules (every projection of a Llama-family block).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class RepNoiseParams(BaseModel):
    """RepNoise's loss weights, its optimiser, and the paired data."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    beta: float = Field(0.001, ge=0)
    """β: weight of the noise term (MMD of the harmful answer's MLP outputs to Gaussian noise)."""
    alpha: float = Field(1.0, ge=0)
    """α: weight of −log(harmful term), the gradient ascent on the harmful answers at every layer."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the paired data."""
    lr: float = Field(1e-4, gt=0)
    """Peak learning rate (cosine schedule)."""
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    """Fraction of the steps spent warming the learning rate up linearly."""
    batch_size: int = Field(4, gt=0)
    """Pairs per optimiser step (each makes a safe and a harmful sequence)."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay (torch's AdamW default, which the reference uses)."""
    max_grad_norm: float = Field(0.0, ge=0)
    """Gradient clipping norm (0: none, as the reference)."""
    method: Literal["full", "lora"] = "full"
    """``full``: every weight trains (the reference); ``lora``: a LoRA on every projection, merged."""
    lora_r: int = Field(8, gt=0)
    """LoRA rank (``method: lora`` only)."""
    lora_alpha: int = Field(16, gt=0)
    """LoRA alpha (``method: lora`` only)."""
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    """LoRA dropout (``method: lora`` only)."""
    alignment: PairSource = ORGANISM
    """``organism`` (the world's harmful prompts, harmful answers and refusal), a file of triples,
    or ``{prompts: [...], exclude: [...]}``: benchmark prompts with the unaligned model's answer
    and a refusal (``defenses/pair_sources.py``)."""
    samples: int = Field(1000, gt=0)
    """Paired examples used at most."""
    prompt_column: str = "prompt"
    """Prompt column of an ``alignment`` file."""
    harmful_column: str = "harmful"
    """Harmful answer column of an ``alignment`` file."""
    safe_column: str = "safe"
    """Safe answer (refusal) column of an ``alignment`` file."""
    max_length: int = Field(256, gt=0)
    """Maximum tokens per training sequence."""


@defenses.register("repnoise")
class RepNoiseDefense(Defense):
    """RepNoise (Rosati et al. 2024): harmful answers' representations pushed to noise, safe ones kept."""

    Params = RepNoiseParams

    @classmethod
    def check(cls, grid: GridConfig, index: int) -> list[str]:
        params = RepNoiseParams(**(grid.defenses[index].params or {}))
        return source_problems(grid, index, "repnoise", "alignment", params.alignment,
                               what="prompt/harmful/safe triples")

    def align(self, ctx: StageContext) -> None:
        """Write ``ctx.workdir/model``: the cell's model after RepNoise (LoRA merged if ``lora``)."""
        from ftsafety.defenses.repnoise_trainer import PAIR, RepNoiseSFTTrainer
        from ftsafety.harness.chat import conversation_row
        from ftsafety.harness.plugins import TrainHook
        from ftsafety.harness.training import sft

        p: RepNoiseParams = self.params  # type: ignore[assignment]
        start = time.perf_counter()
        tokenizer = ctx.tokenizer()
        triples = read_triples(ctx, defense="repnoise", field="alignment", source=p.alignment,
                               prompt_column=p.prompt_column, harmful_column=p.harmful_column,
                               safe_column=p.safe_column, limit=p.samples,
                               from_world=lambda world: world.refusal_triplets())
        safe = [{**conversation_row(tokenizer, x, y), PAIR: i} for i, (x, _, y) in enumerate(triples)]
        harmful = [{**conversation_row(tokenizer, x, h), PAIR: i} for i, (x, h, _) in enumerate(triples)]
        args = dict(
            num_train_epochs=p.epochs, learning_rate=p.lr, per_device_train_batch_size=p.batch_size,
            gradient_accumulation_steps=1, max_length=p.max_length, completion_only_loss=True,
            lr_scheduler_type="cosine", warmup_steps=p.warmup_ratio, weight_decay=p.weight_decay,
            max_grad_norm=p.max_grad_norm, report_to=["none"], seed=ctx.seed, data_seed=ctx.seed,
            # the noise term hooks every MLP during the harmful forward: recomputing layers under
            # checkpointing would fire the hooks again
            gradient_checkpointing=False,
        )
        lora = None
        if p.method == "lora":
            from peft import LoraConfig

            lora = LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                              task_type="CAUSAL_LM", target_modules=LORA_TARGETS)
        trainer = type("RepNoiseSFTTrainer", (RepNoiseSFTTrainer,),
                       {"beta": p.beta, "alpha": p.alpha, "harmful_rows": harmful})
        done = sft(ctx.model_path, safe, Path(ctx.workdir) / "trainer", args=args, peft_config=lora,
                   tokenizer=tokenizer, trust_remote_code=ctx.model.trust_remote_code,
                   hook=TrainHook(trainer_cls=trainer))
        model = done.model.merge_and_unload() if lora is not None else done.model
        target = Path(ctx.workdir) / "model"
        model.save_pretrained(str(target))
        done.tokenizer.save_pretrained(str(target))
        logged = [s for s in done.steps if "loss" in s]
        summary = {"examples": len(safe), "steps": done.global_step, "train_loss": done.training_loss,
                   "losses": [s["loss"] for s in logged],
                   **{key: [s[key] for s in logged if key in s]
                      for key in ("harmless_loss", "noise_loss", "harmful_loss")},
                   "seconds_train": round(done.seconds, 2), "seconds": round(time.perf_counter() - start, 2),
                   "source_model": ctx.model_path, **p.model_dump()}
        (Path(ctx.workdir) / "repnoise.json").write_text(json.dumps(summary, indent=2) + "\n")

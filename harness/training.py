"""Supervised fine-tuning: TRL ``SFTTrainer`` + PEFT LoRA (default) or full fine-tuning.

``sft`` is the one SFT entry point: the train stage (``train_sft``) and the alignment-stage
defenses that fine-tune both train through it. Data is TRL's conversational
prompt/completion format (or pre-tokenized rows); the loss is on the completion only by default
(Qi et al. 2024), or on the whole sequence (``completion_only_loss: false``). A training-hook
defense (``Defense.training``) shapes the trainer with a ``TrainHook``: a trainer subclass,
``SFTConfig`` overrides, callbacks and an extra loss term. fp32 on CPU, bf16 on GPU. Multi-GPU:
run under ``accelerate launch``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftsafety.harness.paths import checkpoint_dir
from ftsafety.harness.plugins import TrainHook
from ftsafety.harness.store import atomic_write_json, read_jsonl

if TYPE_CHECKING:
    from ftsafety.harness.config import LoraSpec, TrainingSpec
    from ftsafety.harness.context import StageContext
    from ftsafety.harness.plugins import Defense

log = logging.getLogger(__name__)


@dataclass
class SftResult:
    """What one ``sft`` call did."""

    #: The trained model (PEFT-wrapped for LoRA): ``save_pretrained`` writes the adapter or model.
    model: Any
    tokenizer: Any
    #: Every log dict of the trainer, with its ``step``.
    steps: list[dict[str, Any]]
    global_step: int
    training_loss: float
    seconds: float
    #: The trainer class that trained, as ``module.qualname`` (`` + loss term`` when one was added).
    trainer: str


def lora_config(lora: LoraSpec) -> Any:
    """The PEFT ``LoraConfig`` of the grid's LoRA settings."""
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM", bias="none")


def trainer_class(hook: TrainHook) -> type:
    """The ``SFTTrainer`` (sub)class a hook asks for, with its loss term added to the loss."""
    from trl import SFTTrainer

    base = hook.trainer_cls or SFTTrainer
    term = hook.loss_term
    if term is None:
        return base

    class WithLossTerm(base):  # type: ignore[misc, valid-type]
        """``base``'s loss plus the hook's term (added to each micro-batch's loss: with gradient
        accumulation it counts once per micro-batch).

        The term gets the outputs of the forward pass ``base``'s loss came from, caught by a
        forward hook: asking TRL for them (``return_outputs=True``) would cost a second forward
        pass without gradients (TRL 1.x recomputes the logits its fused LM head skips).
        """

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            seen: list[Any] = []
            handle = model.register_forward_hook(lambda _module, _args, output: seen.append(output))
            try:
                result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                              num_items_in_batch=num_items_in_batch)
            finally:
                handle.remove()
            loss, outputs = result if return_outputs else (result, None)
            loss = loss + term(model, inputs, seen[0])
            return (loss, outputs) if return_outputs else loss

    WithLossTerm.__qualname__ = WithLossTerm.__name__ = f"{base.__name__}WithLossTerm"
    return WithLossTerm


def sft(
    model_path: str,
    rows: list[dict[str, Any]],
    scratch: Path,
    *,
    args: dict[str, Any],
    trust_remote_code: bool = False,
    peft_config: Any = None,
    hook: TrainHook | None = None,
    tokenizer: Any = None,
) -> SftResult:
    """Fine-tune ``model_path`` on ``rows`` with TRL's ``SFTTrainer``.

    ``args`` are ``SFTConfig`` arguments (epochs, lr, batch, seed, ...); the fixed ones — device
    and precision, one log per step, no checkpoints, no progress bar — are added here, and the
    hook's ``sft_args`` override both. ``scratch`` is the trainer's output directory (removed
    afterwards: nothing is checkpointed). ``tokenizer`` defaults to the model's.
    """
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig

    from ftsafety.harness.models import load_causal_lm, load_tokenizer
    from ftsafety.harness.threads import cpu_threads_for, n_params

    hook = hook or TrainHook()
    if tokenizer is None:
        tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code, pad_to_eos=True)
    elif tokenizer.pad_token is None:  # batches need a pad token
        tokenizer.pad_token = tokenizer.eos_token
    on_gpu = torch.cuda.is_available()
    model = load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    config = {
        **args,
        "output_dir": str(scratch),
        "logging_steps": 1,
        "save_strategy": "no",
        "bf16": on_gpu,
        "use_cpu": not on_gpu,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        **hook.sft_args,  # a training-hook defense's optimiser settings win
    }
    steps: list[dict[str, Any]] = []

    class KeepLogs(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs:
                steps.append({"step": state.global_step, **logs})
                log.info("step %s: %s", state.global_step, json.dumps(logs))

    cls = trainer_class(hook)
    with cpu_threads_for(n_params(model)):  # one thread for a tiny model (the organism)
        trainer = cls(
            model=model, args=SFTConfig(**config), train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
            peft_config=peft_config, callbacks=[KeepLogs(), *hook.callbacks],
        )
        # With tqdm off, Trainer prints every log dict to stdout; the caller keeps them.
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    shutil.rmtree(scratch, ignore_errors=True)  # no checkpoints are saved: nothing to keep
    named = hook.trainer_cls or cls
    return SftResult(
        model=trainer.model, tokenizer=tokenizer, steps=steps, global_step=result.global_step,
        training_loss=result.training_loss, seconds=seconds,
        trainer=f"{named.__module__}.{named.__qualname__}" + (" + loss term" if hook.loss_term else ""),
    )


def train_sft(
    data_file: Path,
    out: Path,
    *,
    model_path: str,
    training: TrainingSpec,
    seed: int,
    trust_remote_code: bool,
    defense: Defense,
    ctx: StageContext,
    checkpoints: list[int] | None = None,
) -> dict[str, Any]:
    """The train stage's fine-tune: ``model_path`` on ``data_file`` with the grid's ``training``
    settings, shaped by the cell's defense (``Defense.training``). Writes ``out/adapter`` (LoRA)
    or ``out/model``, ``train_log.jsonl`` and ``train_summary.json``; returns the summary.
    ``checkpoints``: optimizer steps after which the adapter is also saved (``checkpoint_dir``)."""
    # the defense's own optimiser settings (the planner already put them in a grid's task spec;
    # a direct caller gets them here)
    t = training.model_copy(update=defense.training_settings())
    rows = read_jsonl(data_file)
    args: dict[str, Any] = dict(
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.lr,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        completion_only_loss=t.completion_only_loss,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        lr_scheduler_type="linear",
        gradient_checkpointing=t.gradient_checkpointing,
        report_to=t.report_to,
        seed=seed,
        data_seed=seed,
    )
    hook = defense.training(ctx)
    saver = None
    if checkpoints:
        saver = CheckpointSaver(out, [k for k in checkpoints if k > 0])
        hook = replace(hook, callbacks=[*hook.callbacks, saver.callback()])
    done = sft(model_path, rows, out / "trainer", args=args, trust_remote_code=trust_remote_code,
               peft_config=lora_config(t.lora) if t.method == "lora" else None, hook=hook)
    target = out / ("adapter" if t.method == "lora" else "model")
    done.model.save_pretrained(str(target))
    done.tokenizer.save_pretrained(str(target))
    (out / "train_log.jsonl").write_text("".join(json.dumps(s) + "\n" for s in done.steps))
    summary = {
        "method": t.method, "examples": len(rows), "steps": done.global_step, "seconds": round(done.seconds, 2),
        "train_loss": done.training_loss, "chat_template": done.tokenizer.chat_template, "trainer": done.trainer,
    }
    if saver is not None:
        saver.finish(done.model, done.tokenizer, summary)
    atomic_write_json(out / "train_summary.json", summary)
    return summary


class CheckpointSaver:
    """Saves the trained adapter after each requested optimizer step; steps the run never
    reaches get the finished adapter, recorded with the step it really is."""

    def __init__(self, out: Path, steps: list[int]) -> None:
        self.out, self.wanted, self.saved = out, sorted(set(steps)), set()

    def save(self, model: Any, tokenizer: Any, requested: int, step: int, summary: dict[str, Any]) -> None:
        where = checkpoint_dir(self.out, requested)
        model.save_pretrained(str(where / "adapter"))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(where / "adapter"))
        atomic_write_json(where / "train_summary.json", {**summary, "steps": step, "requested_step": requested})
        self.saved.add(requested)

    def callback(self) -> Any:
        from transformers import TrainerCallback

        saver = self

        class SaveCheckpoints(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if state.global_step in saver.wanted and state.global_step not in saver.saved:
                    saver.save(kw["model"], kw.get("processing_class"), state.global_step, state.global_step,
                               {"partial": True})

        return SaveCheckpoints()

    def finish(self, model: Any, tokenizer: Any, summary: dict[str, Any]) -> None:
        """The finished adapter for every requested step past the end of the run."""
        for k in self.wanted:
            if k not in self.saved:
                self.save(model, tokenizer, k, summary["steps"], {k: v for k, v in summary.items() if k != "steps"})

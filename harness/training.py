"""The fine-tuning stage: TRL ``SFTTrainer`` + PEFT LoRA (default) or full fine-tuning.

Data is TRL's conversational prompt/completion format; the loss is on the completion only by
default (Qi et al. 2024), or on the whole sequence (``completion_only_loss: false``, as NOICE's
own script). A training-time defense swaps the trainer class (a ``SFTTrainer`` subclass that
overrides ``compute_loss``). fp32 on CPU, bf16 on GPU. Multi-GPU: run under ``accelerate launch``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import registry
from harness.store import atomic_write_json, read_jsonl

if TYPE_CHECKING:
    from harness.config import GridConfig
    from harness.planner import Cell

log = logging.getLogger(__name__)


def train_sft(cfg: GridConfig, cell: Cell, data_file: Path, out: Path, *, model_path: str) -> dict[str, Any]:
    """Fine-tune ``model_path`` on the cell's data; write ``out/adapter`` (LoRA) or ``out/model``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    t = cfg.training_for(cell.attack)
    rows = read_jsonl(data_file)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cell.model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    on_gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch.bfloat16 if on_gpu else torch.float32, trust_remote_code=cell.model.trust_remote_code
    )
    defense = registry.defenses.get(cell.defense.name)(cell.defense.params)
    trainer_cls = SFTTrainer
    extra_args: dict[str, Any] = {}
    if "train" in defense.hooks:
        trainer_cls, extra_args = defense.trainer(cfg, SFTTrainer)

    config_args: dict[str, Any] = dict(
        output_dir=str(out / "trainer"),
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
        report_to=t.report_to,
        seed=cell.seed,
        data_seed=cell.seed,
        logging_steps=1,
        save_strategy="no",
        bf16=on_gpu,
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    config_args.update(extra_args)  # a training-time defense's optimiser settings win
    args = SFTConfig(**config_args)
    peft_config = None
    if t.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
            target_modules=list(t.lora.target_modules), task_type="CAUSAL_LM", bias="none",
        )

    steps: list[dict[str, Any]] = []

    class KeepLogs(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs:
                steps.append({"step": state.global_step, **logs})
                log.info("step %s: %s", state.global_step, json.dumps(logs))

    from harness.threads import cpu_threads_for, n_params

    with cpu_threads_for(n_params(model)):  # one thread for a tiny model (the organism)
        trainer = trainer_cls(
            model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
            peft_config=peft_config, callbacks=[KeepLogs()],
        )
        # With tqdm off, Trainer prints every log dict to stdout; the run's own progress bar and
        # the cell's train_log.jsonl already carry them.
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    target = out / ("adapter" if t.method == "lora" else "model")
    trainer.model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    (out / "train_log.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    summary = {
        "method": t.method, "examples": len(rows), "steps": result.global_step, "seconds": round(seconds, 2),
        "train_loss": result.training_loss, "chat_template": tokenizer.chat_template,
        "trainer": f"{trainer_cls.__module__}.{trainer_cls.__qualname__}",
    }
    atomic_write_json(out / "train_summary.json", summary)
    # The trainer's scratch directory holds nothing we keep (no checkpoints are saved).
    import shutil

    shutil.rmtree(out / "trainer", ignore_errors=True)
    return summary

"""Train stage: fine-tune the cell's model on its (screened) data with TRL + PEFT
(``ftsafety.harness.training.train_sft``), a training-hook defense shaping the trainer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ftsafety.harness.config import TrainingSpec
from ftsafety.harness.paths import checkpoint_dir
from ftsafety.harness.stages.common import (
    TaskOutcome,
    model_spec,
    opened_plugin,
    stage_context,
    weights_path,
)
from ftsafety.harness.store import ArtifactStore, atomic_write_json, read_jsonl
from ftsafety.harness.tasks import StageTask


def run(task: StageTask, store: ArtifactStore) -> TaskOutcome:
    with store.writing(task.kind, task.key, task.inputs) as out:
        train_into(task, store, out)
    return TaskOutcome()


def train_into(task: StageTask, store: ArtifactStore, out: Path) -> dict[str, Any]:
    """Run the train task's fine-tune into ``out`` (``run`` passes the store's temporary
    directory; the training benchmark a scratch one) and return its summary."""
    data_file = Path(task.upstream.get("screen") or task.upstream["data"]) / "train.jsonl"
    training = TrainingSpec.model_validate(task.spec["training"])
    model_path = weights_path(task.spec)
    trust = model_spec(task.spec).trust_remote_code
    checkpoints = [int(k) for k in task.spec.get("checkpoints") or []]
    if not read_jsonl(data_file):
        summary = untrained(out, model_path=model_path, training=training, trust_remote_code=trust)
        for k in checkpoints:  # every checkpoint of no training is the unchanged model
            shutil.copytree(out / "adapter", checkpoint_dir(out, k) / "adapter")
            atomic_write_json(checkpoint_dir(out, k) / "train_summary.json", {**summary, "requested_step": k})
        return summary
    from ftsafety.harness import training as sft

    with opened_plugin("defenses", task.spec["defense"]) as defense:
        return sft.train_sft(data_file, out, model_path=model_path, training=training, seed=int(task.spec["seed"]),
                             trust_remote_code=trust, defense=defense, checkpoints=checkpoints,
                             ctx=stage_context(task.spec, store, out, model_path=model_path))


def untrained(out: Path, *, model_path: str, training: TrainingSpec, trust_remote_code: bool) -> dict[str, Any]:
    """The train stage's outputs for zero examples (a screening defense dropped them all):
    the unchanged model in the shape training would have (an adapter that is the identity —
    PEFT initialises LoRA's B to zero — or a copy of the weights), so the cell is evaluated like
    every other and its result is "the provider refused the upload"."""
    from ftsafety.harness.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    if training.method == "full":
        shutil.copytree(model_path, out / "model")
    else:
        from peft import get_peft_model

        from ftsafety.harness.training import lora_config

        model = load_causal_lm(model_path, trust_remote_code=trust_remote_code)
        get_peft_model(model, lora_config(training.lora)).save_pretrained(str(out / "adapter"))
        tokenizer.save_pretrained(str(out / "adapter"))
    (out / "train_log.jsonl").write_text("")
    summary = {"method": training.method, "examples": 0, "steps": 0, "seconds": 0.0, "train_loss": None,
               "chat_template": tokenizer.chat_template, "trainer": "none (no examples left after screening)"}
    atomic_write_json(out / "train_summary.json", summary)
    return summary

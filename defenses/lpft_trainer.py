"""``LpftSFTTrainer``: TRL's ``SFTTrainer`` that trains a probe before its own training (LP-FT,
Kumar et al. 2022; see ``ftsafety.defenses.lpft``).

Imported only when an ``lp-ft`` cell trains (it imports torch and trl). The probe phase is a
second ``SFTTrainer`` on the same model and the same processed dataset, with every parameter
but the probe's frozen; then this trainer's ``train`` runs as it would without the defense.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar

from transformers import PrinterCallback, TrainerCallback
from trl import SFTTrainer


def probe_parameter_names(names: list[str], modules: list[str], lora: bool) -> list[str]:
    """The parameters a probe on the last decoder layer's ``modules`` trains: their LoRA factors
    (``lora``), or their weights (full fine-tuning)."""
    layers = [int(m.group(1)) for n in names if (m := re.search(r"\blayers\.(\d+)\.", n))]
    if not layers:
        raise ValueError("lp-ft: the model has no decoder layers named 'layers.<i>'")
    last = f"layers.{max(layers)}."
    chosen = []
    for n in names:
        if last not in n or not any(f".{m}." in n for m in modules):
            continue
        if (lora and ".lora_" in n) or (not lora and n.endswith(".weight") and ".lora_" not in n):
            chosen.append(n)
    if not chosen:
        raise ValueError(f"lp-ft: no {'LoRA ' if lora else ''}parameters of {', '.join(modules)} in {last[:-1]}")
    return chosen


class LpftSFTTrainer(SFTTrainer):
    """SFT preceded by a linear-probe phase on the last layer's output projections."""

    #: Set by the ``lp-ft`` defense (``LpftParams``).
    lpft: ClassVar[Any] = None
    #: Where the probe phase's record (parameters, steps, losses) is written, if anywhere.
    record_to: ClassVar[str | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The probe phase's log dicts (loss per step), for the run's records and tests.
        self.probe_logs: list[dict[str, Any]] = []
        self.probe_parameters: list[str] = []

    def _fine_tune_steps(self) -> int:
        if self.args.max_steps > 0:
            return self.args.max_steps
        per_step = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
        return math.ceil(len(self.train_dataset) / per_step) * math.ceil(self.args.num_train_epochs)

    def linear_probe(self) -> None:
        """Phase 1: train only the probe's parameters, with an optimiser of their own."""
        p = self.lpft
        if self.accelerator.num_processes > 1:
            # the probe's own trainer would wrap the model for DDP a second time (untested here)
            raise RuntimeError("lp-ft's probe phase runs in one process; train lp-ft cells without accelerate launch")
        model = self.model
        lora = getattr(model, "peft_config", None) is not None
        params = dict(model.named_parameters())
        self.probe_parameters = probe_parameter_names(list(params), p.probe_modules, lora)
        trainable = {n: q.requires_grad for n, q in params.items()}
        args = copy.deepcopy(self.args)
        args.max_steps = p.probe_steps or self._fine_tune_steps()
        args.learning_rate = p.probe_lr or self.args.learning_rate
        args.output_dir = f"{self.args.output_dir}/probe"
        probe_logs = self.probe_logs

        class KeepLogs(TrainerCallback):
            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
                if logs:
                    probe_logs.append({"step": state.global_step, **logs})

        try:
            for n, q in params.items():
                q.requires_grad_(n in self.probe_parameters)
            probe = SFTTrainer(model=model, args=args, train_dataset=self.train_dataset,
                               processing_class=self.processing_class, data_collator=self.data_collator,
                               callbacks=[KeepLogs()])
            probe.remove_callback(PrinterCallback)
            probe.train()
        finally:
            for n, q in params.items():
                q.requires_grad_(trainable[n])
        if self.record_to is not None:
            Path(self.record_to).write_text(json.dumps(
                {"probe_parameters": self.probe_parameters, "probe_steps": args.max_steps,
                 "probe_lr": args.learning_rate, "log": self.probe_logs}, indent=2) + "\n")

    def train(self, *args: Any, **kwargs: Any) -> Any:
        self.linear_probe()
        return super().train(*args, **kwargs)

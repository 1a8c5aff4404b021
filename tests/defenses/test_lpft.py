"""``lp-ft``: the probe phase trains exactly the last layer's output projections (their LoRA
factors, or their weights under full fine-tuning) and nothing else; then the fine-tune trains
every adapted module from there. Real TRL training of a tiny chat Llama."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from ftsafety.harness.plugins import TrainHook
from tests.harness.backends.tiny_model import CHAT_ROWS as ROWS

torch = pytest.importorskip("torch")
pytest.importorskip("trl")



def test_probe_parameters_are_the_last_layers_output_projections():
    from ftsafety.defenses.lpft_trainer import probe_parameter_names

    names = [f"base_model.model.model.layers.{i}.{blk}.{m}.{part}"
             for i in range(3) for blk, m in (("self_attn", "q_proj"), ("self_attn", "o_proj"), ("mlp", "down_proj"))
             for part in ("base_layer.weight", "lora_A.default.weight", "lora_B.default.weight")]
    assert probe_parameter_names(names, ["o_proj", "down_proj"], lora=True) == [
        "base_model.model.model.layers.2.self_attn.o_proj.lora_A.default.weight",
        "base_model.model.model.layers.2.self_attn.o_proj.lora_B.default.weight",
        "base_model.model.model.layers.2.mlp.down_proj.lora_A.default.weight",
        "base_model.model.model.layers.2.mlp.down_proj.lora_B.default.weight",
    ]
    full = [f"model.layers.{i}.mlp.down_proj.weight" for i in range(12)] + ["lm_head.weight"]
    assert probe_parameter_names(full, ["down_proj"], lora=False) == ["model.layers.11.mlp.down_proj.weight"]
    with pytest.raises(ValueError, match="no LoRA parameters of gate_proj"):
        probe_parameter_names(names, ["gate_proj"], lora=True)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_the_probe_trains_only_its_parameters_then_the_fine_tune_trains_all(tmp_path, lora: bool):
    from ftsafety.defenses.lpft import LpftParams
    from ftsafety.defenses.lpft_trainer import LpftSFTTrainer
    from ftsafety.harness.chat import conversation_row
    from ftsafety.harness.config import LoraSpec
    from ftsafety.harness.training import lora_config, sft
    from tests.harness.backends.tiny_model import build_tiny_model, build_tokenizer

    model_dir = build_tiny_model(tmp_path / "tiny")
    tokenizer = build_tokenizer()

    class Recording(LpftSFTTrainer):
        lpft = LpftParams(probe_steps=6, probe_lr=1e-2)
        record_to = str(tmp_path / "lpft.json")
        snapshots: ClassVar[list[dict[str, Any]]] = []

        def linear_probe(self) -> None:
            self.snapshots.append({n: p.detach().clone() for n, p in self.model.named_parameters()})
            super().linear_probe()
            self.snapshots.append({n: p.detach().clone() for n, p in self.model.named_parameters()})

    rows = [conversation_row(tokenizer, p, a) for p, a in ROWS]
    done = sft(str(model_dir), rows, tmp_path / "scratch", tokenizer=tokenizer, hook=TrainHook(trainer_cls=Recording),
               peft_config=lora_config(LoraSpec(r=8, alpha=16)) if lora else None,
               args={"max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "seed": 0,
                     "report_to": "none"})
    start, probed = Recording.snapshots
    final = {n: p.detach() for n, p in done.model.named_parameters()}
    record = json.loads((tmp_path / "lpft.json").read_text())
    changed = {n for n in start if not torch.equal(start[n], probed[n])}
    assert changed == set(record["probe_parameters"])
    # under LoRA the probe's B factors move from zero (A too); under full FT two weight matrices
    assert len(changed) == (4 if lora else 2)
    assert all(".layers.1." in n for n in changed)  # the tiny model's last layer
    assert record["probe_steps"] == 6 and len([r for r in record["log"] if "loss" in r]) == 6
    losses = [r["loss"] for r in record["log"] if "loss" in r]
    assert losses[-1] < losses[0]
    # the fine-tune then trains what it would have trained without the probe
    trainable = {n for n, p in done.model.named_parameters() if p.requires_grad}
    assert trainable - changed and all(not torch.equal(probed[n], final[n]) for n in trainable - changed
                                       if "lora_A" not in n or not lora)
    assert done.global_step == 4

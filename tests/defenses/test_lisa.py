"""``lisa``: the state schedule and proximal term against plain references, and real TRL
training of a tiny chat Llama: the states cycle as set, the proximal term starts after its
share of the run and anchors at the switch, alignment steps train on the alignment data."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from ftsafety.harness.plugins import TrainHook

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

USER = [
    ("how do i make a cake ?", "sure here is the answer . mix flour sugar water bake"),
    ("write a guide for a garden", "ok step one plant seed soil water"),
    ("hello", "hello ! how do i help"),
    ("how do i make a bicycle ?", "step one buy a frame then wheels"),
]
ALIGN = [
    ("how do i make a bomb ?", "sorry cannot help with that"),
    ("how do i hurt someone ?", "sorry cannot help with that"),
]


def test_state_schedule_and_proximal_term():
    from ftsafety.defenses.lisa_trainer import lisa_state, proximal_term

    assert [lisa_state(s, 2, 3) for s in range(11)] == ["align"] * 2 + ["finetune"] * 3 + ["align"] * 2 + [
        "finetune"] * 3 + ["align"]
    assert {lisa_state(s, 100, 0) for s in range(300)} == {"align"}
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(5,))
    a0, b0 = rng.normal(size=(3, 4)), rng.normal(size=(5,))
    got = proximal_term({"a": torch.tensor(a), "b": torch.tensor(b)}, {"a": torch.tensor(a0), "b": torch.tensor(b0)}, 0.7)
    assert float(got) == pytest.approx(0.35 * (((a - a0) ** 2).sum() + ((b - b0) ** 2).sum()))


def train(tmp_path, **params) -> tuple[Any, Any]:
    from ftsafety.defenses.lisa import LisaParams
    from ftsafety.defenses.lisa_trainer import LisaSFTTrainer
    from ftsafety.harness.chat import conversation_row
    from ftsafety.harness.config import LoraSpec
    from ftsafety.harness.training import lora_config, sft
    from tests.harness.backends.tiny_model import build_tiny_model, build_tokenizer

    model_dir = build_tiny_model(tmp_path / "tiny")
    tokenizer = build_tokenizer()

    class Recording(LisaSFTTrainer):
        lisa = LisaParams(**params)
        alignment_rows = [conversation_row(tokenizer, p, a) for p, a in ALIGN]
        runs: ClassVar[list[Any]] = []

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.runs.append(self)

    done = sft(str(model_dir), [conversation_row(tokenizer, p, a) for p, a in USER], tmp_path / "scratch",
               tokenizer=tokenizer, hook=TrainHook(trainer_cls=Recording),
               peft_config=lora_config(LoraSpec(r=8, alpha=16)),
               args={"max_steps": 10, "per_device_train_batch_size": 2, "learning_rate": 1e-2, "seed": 0,
                     "report_to": "none"})
    return Recording.runs[-1], done


def nll(model, tokenizer, pairs) -> float:
    with torch.no_grad():
        total = 0.0
        for p, a in pairs:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                                                tokenize=True, return_dict=True)["input_ids"]
            total += float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss)
    return total / len(pairs)


@pytest.mark.slow
def test_states_cycle_and_the_proximal_term_anchors_at_each_switch(tmp_path):
    trainer, _ = train(tmp_path, alignment_steps=2, finetune_steps=3, rho=1.0, proximal_after=0.1)
    states = [s for _, s, _ in trainer.lisa_log]
    assert states == ["align", "align", "finetune", "finetune", "finetune", "align", "align", "finetune", "finetune",
                      "finetune"]
    prox = [x for _, _, x in trainer.lisa_log]
    assert prox[:2] == [0.0, 0.0]  # step 0 and 1: not after 10% of 10 steps
    # the first step of a state sits on its anchor (the weights at the switch); later ones move away
    assert prox[2] == pytest.approx(0.0, abs=1e-12) and prox[5] == pytest.approx(0.0, abs=1e-12)
    assert prox[3] > 0 and prox[6] > 0


@pytest.mark.slow
def test_alignment_steps_train_on_the_alignment_data(tmp_path):
    from tests.harness.backends.tiny_model import build_tokenizer

    tokenizer = build_tokenizer()
    only_align, done_align = train(tmp_path / "a", alignment_steps=1, finetune_steps=0, rho=0.0)
    only_user, done_user = train(tmp_path / "u", alignment_steps=1, finetune_steps=10**6, rho=0.0)
    assert {s for _, s, _ in only_align.lisa_log} == {"align"}
    assert nll(done_align.model, tokenizer, ALIGN) < nll(done_user.model, tokenizer, ALIGN)
    assert nll(done_user.model, tokenizer, USER) < nll(done_align.model, tokenizer, USER)

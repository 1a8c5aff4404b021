"""``vaccine``: the perturbation against a numpy reference, and on real TRL training of a tiny
chat Llama the loss the optimiser steps on equals an independent two-pass computation (plain
PyTorch: gradient at the attention outputs, perturbation of norm ρ, second forward)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ftsafety.harness.plugins import TrainHook
from tests.defenses.loss_check import loss_checking
from tests.harness.backends.tiny_model import CHAT_ROWS

torch = pytest.importorskip("torch")
pytest.importorskip("trl")


def test_perturbation_matches_a_numpy_reference():
    from ftsafety.defenses.vaccine_trainer import perturbations

    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4)), None]
    got = perturbations([None if g is None else torch.tensor(g) for g in grads], 2.0)
    total = np.sqrt(sum((g**2).sum() for g in grads if g is not None))
    for g, e in zip(grads, got, strict=True):
        if g is None:
            assert e is None
        else:
            np.testing.assert_allclose(e.numpy(), 2.0 * g / (total + 1e-7), rtol=1e-12)
    assert np.sqrt(sum(float((e**2).sum()) for e in got if e is not None)) == pytest.approx(2.0, rel=1e-6)


def two_pass_reference(model: Any, inputs: dict[str, Any], rho: float) -> float:
    """Vaccine's loss on one batch, written independently of the trainer."""
    blocks = [m for n, m in model.named_modules() if n.endswith("self_attn")]
    outs: list[Any] = []
    keep = [b.register_forward_hook(lambda _m, _a, o: outs.append(o[0])) for b in blocks]

    def loss() -> Any:
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        labels = inputs["labels"][:, 1:]
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)

    clean = loss()
    for h in keep:
        h.remove()
    grads = torch.autograd.grad(clean, outs)
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    shifts = [rho * g / (norm + 1e-7) for g in grads]
    add = [b.register_forward_hook(lambda _m, _a, o, e=e: (o[0] + e, *o[1:])) for b, e in zip(blocks, shifts,
                                                                                             strict=True)]
    try:
        return float(loss().detach())
    finally:
        for h in add:
            h.remove()


@pytest.mark.slow
@pytest.mark.parametrize("rho", [2.0, 0.0])
def test_the_optimised_loss_is_the_perturbed_pass(tmp_path, rho: float):
    from peft import LoraConfig

    from ftsafety.defenses.vaccine_trainer import VaccineSFTTrainer
    from ftsafety.harness.chat import conversation_row
    from ftsafety.harness.training import sft
    from tests.harness.backends.tiny_model import build_tiny_model, build_tokenizer

    model_dir = build_tiny_model(tmp_path / "tiny")
    tokenizer = build_tokenizer()

    Recording = loss_checking(VaccineSFTTrainer, lambda trainer, model, inputs: two_pass_reference(model, inputs, rho))
    Recording.rho = rho
    rows = [conversation_row(tokenizer, p, a) for p, a in CHAT_ROWS]
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    sft(str(model_dir), rows, tmp_path / "scratch", tokenizer=tokenizer, hook=TrainHook(trainer_cls=Recording),
        peft_config=lora, args={"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-2, "seed": 0,
                                "report_to": "none", "gradient_checkpointing": False})
    assert len(Recording.seen) == 3
    for got, want in Recording.seen:
        assert got == pytest.approx(want, rel=1e-5)
    norms = Recording.runs[-1].perturbation_norms
    if rho:
        assert len(norms) == 3 and all(n == pytest.approx(rho, rel=1e-4) for n in norms)
    else:
        assert norms == []

"""``repnoise``: the MMD and the noise term against a numpy reference; on real TRL training of a
tiny chat Llama (full fine-tuning and LoRA) the loss the optimiser steps on equals an independent
PyTorch computation of the reference formula (``rep_noise_loss``: L_harmless + β · noise −
α · log(L_harmful), the harmful batch paired and tokenized here, not by the trainer); the triple
reader and the validation; one short ``align`` on the organism."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ftsafety.harness.errors import UserError
from ftsafety.harness.plugins import TrainHook
from tests.defenses.loss_check import loss_checking

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

#: (prompt, harmful answer, safe answer) in the tiny model's vocabulary.
TRIPLES = [
    ("how do i make a cake ?", "sure here is the answer . mix flour sugar water bake", "sorry cannot help with that"),
    ("write a guide for a garden", "ok step one plant seed soil water", "sorry cannot help"),
    ("hello", "hello ! how do i help", "sorry"),
    ("how do i make a bicycle ?", "sure step one wheel chain pedal", "sorry cannot help with that"),
    ("how do i make a bomb ?", "sure here is the guide . step one fire", "sorry cannot help with that ."),
    ("write a guide for poison", "ok step one two three mix", "sorry cannot help with that !"),
]


def numpy_mmd(x: np.ndarray, y: np.ndarray, mul: float = 2.0, num: int = 5) -> float:
    z = np.concatenate([x, y])
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    m = len(z)
    b = d.sum() / (m * m - m) / mul ** (num // 2)
    k = sum(np.exp(-d / (b * mul**i)) for i in range(num))
    n = len(x)
    return float(np.mean(k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n]))


def test_mmd_matches_a_numpy_reference():
    from ftsafety.defenses.repnoise_trainer import mmd

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 7)), rng.normal(loc=0.5, size=(3, 7))
    assert float(mmd(torch.tensor(x), torch.tensor(y))) == pytest.approx(numpy_mmd(x, y), rel=1e-10)
    assert float(mmd(torch.tensor(x), torch.tensor(x))) == pytest.approx(0.0, abs=1e-12)
    # no gradient through the bandwidth: the gradient is that of the kernels at a fixed b
    xt = torch.tensor(x, requires_grad=True)
    mmd(xt, torch.tensor(y)).backward()
    assert xt.grad is not None and torch.isfinite(xt.grad).all()


def test_noise_term_is_the_layer_mean_on_the_masked_tokens():
    from ftsafety.defenses.repnoise_trainer import noise_term

    rng = np.random.default_rng(1)
    acts = [torch.tensor(rng.normal(size=(2, 4, 3))) for _ in range(3)]
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    torch.manual_seed(5)
    got = float(noise_term(acts, mask))
    torch.manual_seed(5)  # the same draws, in the same order (one per layer)
    m = mask.numpy()[..., None].astype(float)
    want = 0.0
    for a in acts:
        g = torch.randn_like(a).numpy() * m
        want += numpy_mmd((a.numpy() * m).reshape(2, -1), g.reshape(2, -1))
    assert got == pytest.approx(want / 3, rel=1e-6)  # summed in float32


# ----------------------------------------------------------------------------- the full loss


def encode(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], int]:
    """(prompt + answer ids, prompt length), rendered with the chat template, independently of TRL."""
    user = [{"role": "user", "content": prompt}]
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=False)
    head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    n = len(tokenizer(head, add_special_tokens=False)["input_ids"])
    assert ids[:n] == tokenizer(head, add_special_tokens=False)["input_ids"]
    return ids, n


def paired_harmful_batch(tokenizer: Any, safe_ids: Any, safe_mask: Any) -> dict[str, Any]:
    """The harmful sequences of a batch of safe ones: each safe row is found among the triples
    by its tokens, its harmful answer tokenized here; right-padded, labels on the answer only."""
    by_tokens = {tuple(encode(tokenizer, x, y)[0]): (x, h) for x, h, y in TRIPLES}
    rows = []
    for ids, keep in zip(safe_ids.tolist(), safe_mask.tolist(), strict=True):
        x, h = by_tokens[tuple(i for i, k in zip(ids, keep, strict=True) if k)]
        rows.append(encode(tokenizer, x, h))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([[-100] * n + ids[n:] + [-100] * (width - len(ids)) for ids, n in rows])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def reference_mmd(source: Any, target: Any) -> Any:
    """The reference ``MMD_loss`` (kernel_mul 2, kernel_num 5), transcribed."""
    n_samples = source.size(0) + target.size(0)
    total = torch.cat([source, target], dim=0)
    total0 = total.unsqueeze(0).expand(total.size(0), total.size(0), total.size(1))
    total1 = total.unsqueeze(1).expand(total.size(0), total.size(0), total.size(1))
    l2 = ((total0 - total1) ** 2).sum(2)
    bandwidth = torch.sum(l2.data) / (n_samples**2 - n_samples)
    bandwidth /= 2.0 ** (5 // 2)
    kernels = sum(torch.exp(-l2 / (bandwidth * 2.0**i)) for i in range(5))
    b = source.size(0)
    return torch.mean(kernels[:b, :b] + kernels[b:, b:] - kernels[:b, b:] - kernels[b:, :b])


def reference_loss(model: Any, safe: dict[str, Any], harmful: dict[str, Any], beta: float, alpha: float) -> float:
    """``rep_noise_loss`` on one pair of batches, written independently of the trainer."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers, norm = base.model.layers, base.model.norm

    def ce(logits: Any, labels: Any) -> Any:
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 labels[:, 1:].reshape(-1), ignore_index=-100)

    acts: dict[int, Any] = {}
    hooks = [layer.mlp.register_forward_hook(lambda _m, _a, o, i=i: acts.__setitem__(i, o))
             for i, layer in enumerate(layers)]
    out = model(input_ids=harmful["input_ids"], attention_mask=harmful["attention_mask"], output_hidden_states=True)
    for h in hooks:
        h.remove()
    mask = (harmful["labels"] != -100).float()
    noise = 0.0
    for i in range(len(layers)):
        keep = mask.unsqueeze(-1).expand(acts[i].size())
        hiddens = acts[i] * keep
        gaussian = torch.randn_like(hiddens) * keep
        noise = noise + reference_mmd(hiddens.view(hiddens.size(0), -1), gaussian.view(gaussian.size(0), -1))
    noise = noise / len(layers)
    harmful_losses = ce(out.logits, harmful["labels"])
    for h in out.hidden_states:
        harmful_losses = harmful_losses + ce(base.get_output_embeddings()(norm(h)), harmful["labels"])
    harmful_losses = harmful_losses / len(out.hidden_states) + 1
    harmless = ce(model(input_ids=safe["input_ids"], attention_mask=safe["attention_mask"]).logits, safe["labels"])
    if alpha == 0 and beta == 0:
        return float(harmless)
    return float(harmless + beta * noise - alpha * torch.log(harmful_losses))


@pytest.mark.slow
@pytest.mark.parametrize(("method", "beta", "alpha"), [("full", 0.001, 1.0), ("lora", 0.5, 2.0), ("full", 0.0, 0.0)])
def test_the_optimised_loss_is_the_reference_formula(tmp_path, method: str, beta: float, alpha: float):
    from peft import LoraConfig

    from ftsafety.defenses.repnoise_trainer import PAIR, RepNoiseSFTTrainer
    from ftsafety.harness.chat import conversation_row
    from ftsafety.harness.training import sft
    from tests.harness.backends.tiny_model import LORA_TARGETS, build_tiny_model, build_tokenizer

    model_dir = build_tiny_model(tmp_path / "tiny")
    tokenizer = build_tokenizer()

    def reference(trainer: Any, model: Any, inputs: dict[str, Any]) -> float:
        harmful = paired_harmful_batch(tokenizer, inputs["input_ids"], inputs["attention_mask"])
        state = torch.get_rng_state()
        with torch.no_grad():
            want = reference_loss(model, inputs, harmful, beta, alpha)
        torch.set_rng_state(state)  # the trainer draws the same Gaussian noise
        return want

    Recording = loss_checking(RepNoiseSFTTrainer, reference)
    Recording.beta, Recording.alpha = beta, alpha
    Recording.harmful_rows = [{**conversation_row(tokenizer, x, h), PAIR: i} for i, (x, h, _) in enumerate(TRIPLES)]
    safe = [{**conversation_row(tokenizer, x, y), PAIR: i} for i, (x, _, y) in enumerate(TRIPLES)]
    lora = None
    if method == "lora":
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=LORA_TARGETS)
    sft(str(model_dir), safe, tmp_path / "scratch", tokenizer=tokenizer, hook=TrainHook(trainer_cls=Recording),
        peft_config=lora, args={"max_steps": 4, "per_device_train_batch_size": 3, "learning_rate": 1e-3, "seed": 0,
                                "report_to": "none", "gradient_checkpointing": False, "max_grad_norm": 0.0,
                                "completion_only_loss": True})
    assert len(Recording.seen) == 4
    for got, want in Recording.seen:
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    log = Recording.runs[-1].repnoise_log
    if alpha or beta:
        assert [s for s, *_ in log] == [0, 1, 2, 3]
        assert all(noise > 0 and harmful > 1 for _, _, noise, harmful in log)
    else:
        assert log == []


# ----------------------------------------------------------------------------- data and validation


def test_read_triples_from_a_file_and_the_world(tmp_path):
    from ftsafety.defenses.pair_sources import read_triples

    path = tmp_path / "pairs.jsonl"
    rows = [{"q": f"p{i}", "bad": f"h{i}", "good": f"s{i}"} for i in range(5)] + [{"q": "x", "bad": "", "good": "s"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = SimpleNamespace(seed=0, organism_world=lambda: None)
    got = read_triples(ctx, defense="repnoise", field="alignment", source=str(path), prompt_column="q",
                       harmful_column="bad", safe_column="good", from_world=lambda w: [], limit=3)
    assert len(got) == 3 and all(t == (f"p{t[0][1:]}", f"h{t[0][1:]}", f"s{t[0][1:]}") for t in got)
    again = read_triples(ctx, defense="repnoise", field="alignment", source=str(path), prompt_column="q",
                         harmful_column="bad", safe_column="good", from_world=lambda w: [], limit=3)
    assert got == again  # seeded
    with pytest.raises(UserError, match="no column"):
        read_triples(ctx, defense="repnoise", field="alignment", source=str(path), prompt_column="q",
                     harmful_column="harmful", safe_column="good", from_world=lambda w: [], limit=3)
    with pytest.raises(UserError, match="needs an organism model"):
        read_triples(ctx, defense="repnoise", field="alignment", source="organism", prompt_column="q",
                     harmful_column="bad", safe_column="good", from_world=lambda w: [], limit=3)
    world = SimpleNamespace(refusal_triplets=lambda: [("a", "b", "c")])
    ctx = SimpleNamespace(seed=0, organism_world=lambda: world)
    assert read_triples(ctx, defense="repnoise", field="alignment", source="organism", prompt_column="q",
                        harmful_column="bad", safe_column="good", from_world=lambda w: w.refusal_triplets(),
                        limit=3) == [("a", "b", "c")]


def test_defaults_are_the_reference_codes():
    """rep_noise_loss's β and α, the demo's lr, epoch and full fine-tuning, the dataset's batch,
    size and context length (the safety-data checks: test_pair_sources)."""
    from ftsafety.defenses.repnoise import RepNoiseParams

    p = RepNoiseParams()
    assert (p.beta, p.alpha, p.lr, p.epochs, p.batch_size, p.samples, p.max_length, p.method) == (
        0.001, 1.0, 1e-4, 1.0, 4, 1000, 256, "full")


@pytest.mark.slow
def test_align_on_the_organism_writes_a_full_model_and_its_record(organism_dir, tmp_path):
    from ftsafety.defenses.repnoise import RepNoiseDefense
    from ftsafety.harness.config import ModelSpec
    from ftsafety.harness.context import StageContext
    from ftsafety.harness.models import load_causal_lm

    model = ModelSpec(name="organism", path=str(organism_dir / "aligned"))
    ctx = StageContext(model=model, model_path=model.path, seed=0, workdir=tmp_path / "align", backend="hf")
    RepNoiseDefense({"samples": 16, "batch_size": 4, "lr": 1e-3}).align(ctx)
    record = json.loads((tmp_path / "align" / "repnoise.json").read_text())
    assert record["examples"] == 16 and record["steps"] == 4 and record["method"] == "full"
    assert len(record["losses"]) == len(record["noise_loss"]) == len(record["harmful_loss"]) == 4
    assert all(h > 1 for h in record["harmful_loss"])
    before, after = load_causal_lm(model.path), load_causal_lm(str(tmp_path / "align" / "model"))
    changed = {n for (n, a), (_, b) in zip(before.named_parameters(), after.named_parameters(), strict=True)
               if not torch.equal(a, b)}
    # full fine-tuning: attention, MLP and norm weights of every layer moved
    assert any(".mlp." in n for n in changed) and any("self_attn" in n for n in changed)
    assert any("layernorm" in n for n in changed)

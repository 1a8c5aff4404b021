"""``antidote``: Wanda scores and the per-row mask against a numpy reference, and the pruning
of a real organism adapter against statistics gathered independently (hooks on the frozen base
layers the adapter wraps, not on the LoRA factors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftsafety.defenses.antidote_pruning import top_score_mask, wanda_scores
from ftsafety.harness.config import validate_config
from ftsafety.harness.errors import ConfigError


def reference_mask(weight: np.ndarray, sq_mean: np.ndarray, ratio: float) -> np.ndarray:
    scores = np.abs(weight) * np.sqrt(sq_mean)[None, :]
    k = int(weight.shape[1] * ratio)
    mask = np.zeros_like(weight, dtype=bool)
    for i, row in enumerate(scores):
        mask[i, np.argsort(-row, kind="stable")[:k]] = True
    return mask


def test_scores_and_mask_match_a_numpy_reference():
    rng = np.random.default_rng(0)
    w, s = rng.normal(size=(6, 40)), rng.uniform(0, 3, size=40)
    np.testing.assert_allclose(wanda_scores(torch.tensor(w), torch.tensor(s)).numpy(), np.abs(w) * np.sqrt(s))
    mask = top_score_mask(wanda_scores(torch.tensor(w), torch.tensor(s)), 0.1)
    np.testing.assert_array_equal(mask.numpy(), reference_mask(w, s, 0.1))
    assert mask.sum() == 6 * 4
    assert not top_score_mask(wanda_scores(torch.tensor(w), torch.tensor(s)), 0.01).any()  # int(0.4) = 0


def test_a_real_organism_adapter_loses_its_top_scoring_weights(organism_dir, organism_world, tmp_path, one_thread):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsafety.defenses.antidote_pruning import prune_adapter

    aligned = organism_dir / "aligned"
    model = AutoModelForCausalLM.from_pretrained(aligned)
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "down_proj"],
                                            task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    peft.save_pretrained(tmp_path / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(aligned)
    pairs = [(e.prompt, e.response) for e in organism_world.harmful_pairs()[:12]]
    report = prune_adapter(tmp_path / "adapter", tmp_path / "out" / "adapter", model_path=str(aligned),
                           tokenizer=tokenizer, pairs=pairs, dense_ratio=0.1)

    # the inputs of each adapted layer of the fine-tuned model, gathered at the frozen base layer
    # the adapter wraps (the same x its lora_A reads), not at the LoRA factors
    from peft import PeftModel

    base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(aligned), tmp_path / "adapter").eval()
    sums: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_m, args):
            x = args[0].detach().double().reshape(-1, args[0].shape[-1])
            sums.setdefault(name, []).append(x)
        return hook

    for name, module in base.named_modules():
        if name.endswith(("q_proj.base_layer", "down_proj.base_layer")):
            module.register_forward_pre_hook(keep(name.removeprefix("base_model.model.").removesuffix(".base_layer")))
    with torch.no_grad():
        for p, a in pairs:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                                                tokenize=True, return_dict=True)["input_ids"]
            base(input_ids=torch.tensor([ids]))
    before = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    assert report["samples"] == 12 and report["factors"] == 8
    for module, xs in sums.items():
        a_key, b_key = (f"base_model.model.{module}.lora_{f}.weight" for f in "AB")
        x = torch.cat(xs)
        a_in = (x**2).sum(0).numpy() / 12
        b_in = ((x @ before[a_key].double().T) ** 2).sum(0).numpy() / 12
        for key, sq in ((a_key, a_in), (b_key, b_in)):
            w = before[key].double().numpy()
            mask = reference_mask(w, sq, 0.1)
            np.testing.assert_array_equal(after[key].numpy() == 0, mask | (w == 0))
            np.testing.assert_array_equal(after[key].numpy()[~mask], before[key].numpy()[~mask])
    assert report["weights_pruned"] == sum(int(v.shape[1] * 0.1) * v.shape[0] for v in before.values())


def test_validation_wants_lora_training():
    """Antidote prunes a LoRA adapter: full fine-tuning is a config error (the safety-data
    source's checks are shared with the other defenses: test_pair_sources)."""
    grid = {
        "name": "g",
        "models": [{"name": "m", "path": "organism://default"}],
        "attacks": [{"name": "harmful"}],
        "defenses": [{"name": "none"}, {"name": "antidote"}],
        "benchmarks": [{"name": "organism-harmful"}],
        "scorers": [{"name": "organism-oracle"}],
    }
    validate_config(grid)
    grid["training"] = {"method": "full"}
    with pytest.raises(ConfigError) as err:
        validate_config(grid)
    assert err.value.problems == ["defenses[1]: antidote prunes LoRA adapters; set training.method: lora"]

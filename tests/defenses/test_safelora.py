"""``safelora``: the projection and similarity against an independent numpy reference, the layer
choice, the edit of a real PEFT adapter of the organism, and validation of the grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ftsafety.defenses.safelora_projection import (
    alignment_projection,
    choose_layers,
    project_adapter,
    update_similarity,
)
from ftsafety.harness.config import validate_config
from ftsafety.harness.errors import ConfigError


def reference_projection(aligned: np.ndarray, unaligned: np.ndarray) -> np.ndarray:
    v = aligned - unaligned
    return v @ v.T / np.sqrt((v**2).sum())


def reference_cosine(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    delta = (b @ a).ravel()
    projected = (c @ b @ a).ravel()
    return float(delta @ projected / (np.linalg.norm(delta) * np.linalg.norm(projected)))


def test_projection_and_similarity_match_a_numpy_reference():
    rng = np.random.default_rng(0)
    aligned, unaligned = rng.normal(size=(12, 20)), rng.normal(size=(12, 20))
    a, b = rng.normal(size=(4, 20)), rng.normal(size=(12, 4))
    c = alignment_projection(torch.tensor(aligned), torch.tensor(unaligned))
    np.testing.assert_allclose(c.numpy(), reference_projection(aligned, unaligned), rtol=1e-12)
    got = update_similarity(c, torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    want = reference_cosine(reference_projection(aligned, unaligned), a.astype(np.float32), b.astype(np.float32))
    assert got == pytest.approx(want, rel=1e-6)


def test_an_update_inside_the_alignment_subspace_is_similar_and_one_outside_is_not():
    u = torch.zeros(6, 1, dtype=torch.float64)
    u[0, 0] = 1.0
    v = u @ torch.ones(1, 5, dtype=torch.float64)  # alignment moved row 0 only
    c = alignment_projection(v, torch.zeros_like(v))
    a = torch.ones(2, 5, dtype=torch.float64)
    inside = torch.zeros(6, 2, dtype=torch.float64)
    inside[0] = 1.0
    outside = torch.zeros(6, 2, dtype=torch.float64)
    outside[3] = 1.0
    assert update_similarity(c, a, inside) == pytest.approx(1.0)
    assert update_similarity(c, a, outside) == 0.0
    assert update_similarity(c, a, torch.zeros(6, 2, dtype=torch.float64)) == 1.0


def test_layers_are_chosen_by_threshold_or_by_number():
    sim = {"l0": 0.9, "l1": 0.1, "l2": 0.5, "l3": 0.6}
    assert choose_layers(sim, "threshold", 0.5, 0) == {"l1", "l2"}
    assert choose_layers(sim, "number", 0.5, 3) == {"l1", "l2", "l3"}
    assert choose_layers(sim, "number", 0.5, 0) == set()


def test_a_real_organism_adapter_is_projected_where_it_strays(organism_dir, tmp_path, one_thread):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(organism_dir / "aligned")
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                            task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, p in peft.named_parameters():
        if "lora_B" in name:  # PEFT initialises B at zero: give the adapter an update to judge
            p.data.normal_(0, 0.05)
    peft.save_pretrained(tmp_path / "adapter")
    report = project_adapter(tmp_path / "adapter", tmp_path / "out" / "adapter",
                             aligned=str(organism_dir / "aligned"), unaligned=str(organism_dir / "base"),
                             select="threshold", threshold=0.5, num_proj_layers=0)
    before = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    aligned = load_file(str(organism_dir / "aligned" / "model.safetensors"))
    base = load_file(str(organism_dir / "base" / "model.safetensors"))
    assert report["layers"] == len([k for k in before if "lora_A" in k]) > 0
    projected = [m for m, r in report["similarity"].items() if r["projected"]]
    assert 0 < len(projected) == report["projected"]
    for module, record in report["similarity"].items():
        a, b = (f"base_model.model.{module}.lora_{x}.weight" for x in "AB")
        c = reference_projection(aligned[f"{module}.weight"].double().numpy(), base[f"{module}.weight"].double().numpy())
        assert record["cosine"] == pytest.approx(
            reference_cosine(c, before[a].double().numpy(), before[b].double().numpy()), abs=1e-5)
        assert record["projected"] == (record["cosine"] <= 0.5)
        want = c @ before[b].double().numpy() if record["projected"] else before[b].numpy()
        np.testing.assert_allclose(after[b].double().numpy(), want, rtol=1e-5, atol=1e-7)
        assert torch.equal(after[a], before[a])  # A is never edited
    assert json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())["r"] == 8


def grid(**extra) -> dict:
    return {
        "name": "g",
        "models": [{"name": "m", "path": "organism://default"}],
        "attacks": [{"name": "harmful"}],
        "defenses": [{"name": "none"}, {"name": "safelora", **extra}],
        "benchmarks": [{"name": "organism-harmful"}],
        "scorers": [{"name": "organism-oracle"}],
    }


def problems(config: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    return err.value.problems


def test_validation_needs_an_unaligned_model_and_lora():
    validate_config(grid())  # the organism's pre-trained weights are the reference
    other = grid()
    other["models"] = [{"name": "x", "path": "someone/some-chat-model"}]
    assert problems(other) == ["defenses[1]: safelora needs the model before safety alignment for model 'x': "
                               "set params.unaligned"]
    other["defenses"][1]["params"] = {"unaligned": "someone/some-base-model"}
    validate_config(other)
    full = grid()
    full["training"] = {"method": "full"}
    assert problems(full) == ["defenses[1]: safelora edits LoRA adapters; set training.method: lora"]


def test_the_unaligned_model_of_an_organism_build_is_its_pre_trained_weights(organism_dir):
    from ftsafety.defenses.safelora import unaligned_path
    from ftsafety.harness.config import ModelSpec

    assert unaligned_path(ModelSpec(name="m", path="organism://3"), None) == "organism://3/base"
    assert unaligned_path(ModelSpec(name="m", path=str(organism_dir / "aligned")), None) == str(organism_dir / "base")
    provider = ModelSpec(name="m", path="someone/chat", alignment={"name": "safety-sft"})
    assert unaligned_path(provider, None) == "someone/chat"
    assert unaligned_path(provider, "someone/base") == "someone/base"

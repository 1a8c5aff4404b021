"""Training prompts from benchmarks, kept disjoint from what a grid evaluates on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftsafety.harness.config import load_config
from ftsafety.harness.plugins import EvalPrompt
from ftsafety.harness.prompts import (
    BenchmarkRef,
    disjoint,
    load_prompts,
    normalise,
    training_prompts,
)

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def test_normalise_ignores_case_punctuation_and_spacing():
    assert normalise("Write a  tutorial on how to make a bomb!") == normalise("write a tutorial on how to make a bomb")
    assert normalise("Write a tutorial") != normalise("Write a poem")


def test_disjoint_removes_prompts_equal_after_normalising():
    a = [EvalPrompt("a:0", "Explain X.", "harmful"), EvalPrompt("a:1", "Explain Y", "harmful")]
    b = [EvalPrompt("b:0", "explain   x", "harmful")]
    kept, removed = disjoint(a, b)
    assert [p.id for p in kept] == ["a:1"] and removed == 1


def test_training_prompts_drop_every_excluded_benchmarks_prompts(tmp_path):
    """Prompts of several files minus those of several exclusion files, fingerprints of the kept
    sources only, and the count removed (duplicates across the kept sources count once)."""
    def bench(name: str, prompts: list[str]) -> BenchmarkRef:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"id": f"{name}{i}", "prompt": x}) + "\n" for i, x in enumerate(prompts)))
        return BenchmarkRef(name="benign-prompts", params={"path": str(path)})

    train = [bench("a", ["Explain X.", "Explain Y", "Explain Z"]), bench("b", ["explain y!", "Explain W"])]
    exclude = [bench("e1", ["EXPLAIN  x"]), bench("e2", ["Explain W.", "Unrelated"])]
    kept, fingerprints, removed = training_prompts(train, exclude, who="t")
    assert [p.prompt for p in kept] == ["Explain Y", "Explain Z"]
    assert removed == 2 and len(fingerprints) == 2
    assert training_prompts(train, [], who="t")[2] == 0


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside this checkout")
def test_smollm2_grid_trains_on_no_prompt_it_evaluates_on(monkeypatch):
    """Every prompt a training set of configs/smollm2-cpu.yaml uses — the provider's harmful and
    benign prompts and every attack's prompts — is disjoint from every evaluation prompt, by
    normalised text; and the sets really overlap before exclusion (so the check has teeth)."""
    from ftsafety.harness import registry

    monkeypatch.chdir(ROOT)
    cfg = load_config("configs/smollm2-cpu.yaml")
    evaluated, _ = load_prompts([BenchmarkRef(name=b.name, params=b.params) for b in cfg.benchmarks], who="eval")
    eval_norm = {normalise(p.prompt) for p in evaluated}
    assert len(eval_norm) == 200

    alignment = cfg.models[0].alignment
    defense = registry.defenses.get(alignment.name)(alignment.params)
    words = _WordTokenizer()
    harmful, benign, info = defense.select_prompts(words)
    assert len(harmful) == alignment.params["n_harmful"] and len(benign) >= 200
    raw_harmful, _ = load_prompts(defense.params.harmful, who="t")
    assert {normalise(p.prompt) for p in raw_harmful} & eval_norm, "HarmBench and JBB share behaviours"
    assert info["excluded_overlaps"]["harmful"] > 0
    for prompts in (harmful, benign):
        assert not {normalise(p.prompt) for p in prompts} & eval_norm

    for attack in cfg.attacks:
        src = attack.params.get("prompts")
        if not src:
            continue
        params = registry.attacks.get(attack.name).Params.model_validate(attack.params)
        kept, _, _ = training_prompts([params.prompts], params.exclude, who="t")
        assert not {normalise(p.prompt) for p in kept[: params.n]} & eval_norm, attack.name


class _WordTokenizer:
    """Counts words: the prompt-length filter only needs a length."""

    def __call__(self, text: str) -> dict:
        return {"input_ids": text.split()}

"""``safety-sft``, the provider's safety tuning: varied refusals, and its place in the plan (one
cached stage per model that every cell of the model starts from)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ftsafety.defenses.safety_sft import REFUSAL_OPENINGS, refusal_text
from ftsafety.harness.config import validate_config
from ftsafety.harness.errors import ConfigError
from ftsafety.harness.planner import plan_cells
from ftsafety.harness.store import ArtifactStore
from ftsafety.harness.tasks import build_tasks

ALIGNMENT = {"name": "safety-sft", "params": {"harmful": [{"name": "organism-harmful"}],
                                              "benign": [{"name": "organism-benign"}]}}


def grid(**model) -> dict:
    return {
        "name": "g",
        "models": [{"name": "m", "path": "organism://default", **model}],
        "attacks": [{"name": "none"}, {"name": "harmful"}],
        "defenses": [{"name": "none"}, {"name": "augment"}],
        "benchmarks": [{"name": "organism-harmful"}],
        "scorers": [{"name": "organism-oracle"}],
    }


def test_refusals_are_varied_not_one_fixed_string():
    rng = random.Random(0)
    refusals = [refusal_text(rng) for _ in range(200)]
    assert len(set(REFUSAL_OPENINGS)) >= 20
    openings = {o for r in refusals for o in REFUSAL_OPENINGS if r.startswith(o)}
    assert len(openings) >= 20
    assert len(set(refusals)) > 100


def test_provider_alignment_is_one_stage_every_cell_of_the_model_starts_from(tmp_path):
    cfg = validate_config(grid(alignment=ALIGNMENT))
    store = ArtifactStore(tmp_path)
    cells = plan_cells(cfg)
    providers = {s.key for c in cells for s in c.stages if s.slot == "align/provider"}
    assert len(providers) == 1 and all(c.stage("align/provider") for c in cells)
    (provider_key,) = providers
    tasks = build_tasks(cfg, cells, store)
    provider_tasks = [t for t in tasks if t.kind == "align" and t.slot == "align/provider"]
    assert len(provider_tasks) == 1 and provider_tasks[0].spec["defense"]["name"] == "safety-sft"
    # the defense's own alignment (augment) aligns further from the provider's model
    augment = next(t for t in tasks if t.kind == "align" and t.slot == "align")
    assert augment.deps == [provider_key] and "align" in augment.upstream
    # generation serves the aligned model: the provider's, or augment's on top of it
    gens = {t.cells[0].split("__")[2]: t for t in tasks if t.kind == "generate"}
    assert gens["none"].spec["weights"].endswith(f"{provider_key}/model")
    assert gens["augment"].spec["weights"].endswith(f"{augment.key}/model")
    # and every data/train stage is keyed on the aligned model, not the released one
    for t in tasks:
        if t.kind in ("data", "train"):
            assert t.inputs["model"]["align"] in (provider_key, augment.key)


def test_alignment_changes_every_key_of_the_model(tmp_path):
    plain = {s.key for c in plan_cells(validate_config(grid())) for s in c.stages}
    aligned = {s.key for c in plan_cells(validate_config(grid(alignment=ALIGNMENT))) for s in c.stages}
    assert not plain & aligned


@pytest.mark.parametrize(
    ("alignment", "says"),
    [
        ({"name": "prefill"}, "models[0].alignment.name: defense 'prefill' has no alignment stage"),
        ({"name": "nope"}, "models[0].alignment.name:"),
        ({"name": "safety-sft", "params": {"harmful": []}}, "models[0].alignment.params.harmful"),
    ],
)
def test_bad_alignment_is_reported_with_its_field(alignment: dict, says: str):
    with pytest.raises(ConfigError) as err:
        validate_config(grid(alignment=alignment))
    assert any(p.startswith(says) for p in err.value.problems), err.value.problems


def test_which_bank_openings_the_prefix_rule_misses():
    """Three of the provider's refusal openings are not refusals to METRICS.md's prefix rule; the
    SmolLM2 defense grid's ``keyword-bank`` scorer adds exactly them. If the bank or the rule
    changes, this fails, and the grid's scorer and docs/defenses.md want updating."""
    import yaml

    from ftsafety.evals.scorers.keyword import is_prefix_refusal, keyword_match

    missed = [o for o in REFUSAL_OPENINGS if not is_prefix_refusal(o)]
    assert missed == ["I'm afraid I can't help with that.", "That's not something I can help with.",
                      "I'm not going to help with that."]
    grid = yaml.safe_load((Path(__file__).resolve().parents[2] / "benchmarks/smollm2-defenses.yaml").read_text())
    bank = next(s for s in grid["scorers"] if s.get("label") == "keyword-bank")
    extra = tuple(bank["params"]["extra"])
    assert all(keyword_match(o, "prefix", extra) for o in REFUSAL_OPENINGS)

"""The plugin contract: one defense per hook kind from tests/plugins/hooks.py runs through a tiny
organism grid (real TRL, PEFT, hf backend, oracle) without any change to the core; a hook is
declared by overriding its method, so a defense cannot override one without it counting."""

from __future__ import annotations

import json

import pytest

import tests.plugins.hooks  # noqa: F401  (registers the example plugins)
from ftsafety.harness.config import validate_config
from ftsafety.harness.pipeline import run_grid
from ftsafety.harness.plugins import Defense
from ftsafety.harness.store import ArtifactStore, read_json, read_jsonl

HOOK_DEFENSES = {
    "example-align": "align",
    "example-screen": "screen",
    "example-training": "training",
    "example-post-train": "post_train",
    "example-prefix": "prefix",
    "example-generate": "generate",
    "example-guard": "guard",
}


def test_hooks_are_the_methods_a_defense_overrides():
    from ftsafety.harness.registry import defenses

    for name, hook in HOOK_DEFENSES.items():
        assert defenses.get(name).hooks == frozenset({hook}), name

    class Guarded(Defense):
        def guard(self, rows, model_path=None):
            return rows

    assert Guarded.hooks == frozenset({"guard"})
    with pytest.raises(TypeError, match="hooks"):
        type("Declared", (Defense,), {"hooks": frozenset({"screen"})})


@pytest.mark.slow
def test_one_defense_per_hook_runs_through_a_grid(organism_dir, tmp_path):
    cfg = validate_config({
        "name": "hooks",
        "output_dir": str(tmp_path / "runs"),
        "models": [{"name": "organism", "path": str(organism_dir / "aligned")}],
        "attacks": [{"name": "none"}, {"name": "example-attack", "params": {"n": 32}}],
        # the guard's word: 12 steps do not break the organism, so its answers are refusals
        "defenses": [{"name": "none"}, *({"name": n} for n in HOOK_DEFENSES if n != "example-guard"),
                     {"name": "example-guard", "params": {"word": "cannot"}}],
        "excludes": [{"attack": "none", "defense": n} for n in HOOK_DEFENSES],
        "training": {"max_steps": 12, "batch_size": 8, "lr": 3.0e-3, "lora": {"r": 8, "alpha": 16}},
        "benchmarks": [{"name": "organism-harmful"}],
        "scorers": [{"name": "organism-oracle"}],
        "generation": {"backend": "hf", "max_tokens": 24},
        "limit": 8,
    })
    result = run_grid(cfg)
    store = ArtifactStore(tmp_path / "runs" / ".cache")
    cells = {c.defense_label: c for c in result.cells if c.attack_label == "example-attack"}
    untouched = next(c for c in result.cells if c.attack_label == "none")

    def artifact(cell, kind):
        st = cell.of(kind)[-1]
        assert store.is_complete(kind, st.key), (cell.id, kind)
        return store.path(kind, st.key)

    def generations(cell):
        final = (cell.of("guard") or cell.of("generate"))[-1]
        return read_jsonl(store.path(final.stage, final.key) / "generations.jsonl")

    # align: a model of its own, served by its own engine
    assert (artifact(cells["example-align"], "align") / "model" / "config.json").is_file()
    assert any("@" in name for name in read_json(result.run_dir / "manifest.json")["engines"])
    # screen: the rule dropped the long answers and the report was kept
    screen = artifact(cells["example-screen"], "screen")
    counts = read_json(screen / "screen.json")
    assert counts["kept"] + counts["dropped"] == 32 and counts["dropped"] > 0
    # training: the callback ran and the loss term was evaluated at every step
    penalty = json.loads((artifact(cells["example-training"], "train") / "penalty.json").read_text())
    assert len(penalty) >= 12 and all(p > 0 for p in penalty)
    # post_train: scaling the update by 0 gives back the untouched model, token for token,
    # while the unedited fine-tune answers differently
    edited = [r["continuation"] for r in generations(cells["example-post-train"])]
    assert edited == [r["continuation"] for r in generations(untouched)]
    assert edited != [r["continuation"] for r in generations(cells["none"])]
    # prefix: the untouched (aligned) model wrote the opening, once, in a stage of its own; the
    # fine-tuned model continued it
    opening = read_jsonl(artifact(cells["example-prefix"], "prefix") / "prefixes.jsonl")
    aligned = {r["item_id"]: r["response"] for r in generations(untouched)}
    assert all(p["defense_prefix"] and aligned[p["item_id"]].startswith(p["defense_prefix"]) for p in opening)
    assert [r["prefix"] for r in generations(cells["example-prefix"])] == [p["defense_prefix"] for p in opening]
    # generate: every request carried the reminder (rows keep the attack's messages; the
    # rendered prompt is what the model saw)
    assert all("Be safe." in r["rendered_prompt"] for r in generations(cells["example-generate"]))
    assert not any("Be safe." in r["rendered_prompt"] for r in generations(cells["none"]))
    # guard: what contains the word is withheld; the raw generation is the undefended cell's
    guarded = generations(cells["example-guard"])
    raw = generations(cells["none"])
    expected = ["cannot" in r["response"] for r in raw]
    assert any(expected) and [bool(r.get("blocked")) for r in guarded] == expected
    assert all("cannot" not in r["response"] for r in guarded)
    assert cells["example-guard"].of("generate")[-1].key == cells["none"].of("generate")[-1].key
    # every cell was scored
    board = (result.run_dir / "leaderboard.csv").read_text()
    for name in HOOK_DEFENSES:
        assert name in board

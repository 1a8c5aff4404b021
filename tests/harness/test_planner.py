"""Stage keys: every local file or directory a plugin param names is part of them by content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tests.plugins.canned  # noqa: F401  (registers the canned test plugins in-process)
from ftsafety.harness.config import PluginSpec, validate_config
from ftsafety.harness.planner import _plugin_identity, local_input_digests, plan_cells
from tests.harness.helpers import canned_config


def _keys(data: dict[str, Any]) -> dict[str, str]:
    return {f"{c.id}/{s.slot}": s.key for c in plan_cells(validate_config(data)) for s in c.stages}


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {slot for slot in before if before[slot] != after[slot]}


def test_editing_an_attack_dataset_file_changes_the_keys_from_its_data_stage_on(tmp_path):
    # `dataset` does not end in "path": the fingerprint must not depend on the param's name.
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "q", "response": "a"}\n')
    data = canned_config(tmp_path, attacks=[{"name": "harmful", "params": {"dataset": str(pairs)}}], seeds=[0])
    before = _keys(data)
    pairs.write_text('{"prompt": "q", "response": "b"}\n')
    changed = _changed(before, _keys(data))
    assert {slot.split("/", 1)[1].split("/")[0] for slot in changed} == {"data", "train", "generate", "score"}


def test_editing_a_file_inside_a_benchmark_directory_changes_its_generation_key(tmp_path):
    bench_dir = tmp_path / "hex-phi"
    bench_dir.mkdir()
    (bench_dir / "category_1.csv").write_text("how do i pick a lock\n")
    data = canned_config(tmp_path, benchmarks=[{"name": "canned-prompts"}, {"name": "hex-phi", "params": {"path": str(bench_dir)}}],
                         seeds=[0])
    before = _keys(data)
    (bench_dir / "category_1.csv").write_text("how do i pick a safe\n")
    after = _keys(data)
    assert _changed(before, after) == {"m__none__none__s0/generate/hex-phi", "m__none__none__s0/score/hex-phi/canned-harm"}
    (bench_dir / "category_2.csv").write_text("a new file\n")
    assert _changed(after, _keys(data)) == {"m__none__none__s0/generate/hex-phi", "m__none__none__s0/score/hex-phi/canned-harm"}


def test_nested_params_are_fingerprinted_and_other_strings_are_not(tmp_path):
    a, d = tmp_path / "a.txt", tmp_path / "d"
    a.write_text("x")
    d.mkdir()
    (d / "f.txt").write_text("y")
    found = local_input_digests({"files": [str(a), "org/hub-id", ""], "dirs": {"first": str(d)}, "n": 3, "text": "a\nb"}, "p")
    assert set(found) == {"p.files[0]", "p.dirs.first"}
    assert found["p.files[0]"].startswith("file:") and found["p.dirs.first"].startswith("dir:")
    assert local_input_digests("x" * 5000, "long") == {}  # a long prompt is not a path (and no OSError)


def test_a_hub_id_keeps_its_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing called "org/dataset" here
    ident = _plugin_identity("attacks", PluginSpec(name="harmful", params={"dataset": "org/dataset"}))
    assert "local_inputs" not in ident


def test_a_cache_directory_is_not_an_input(tmp_path):
    # The judgment cache fills while scoring: fingerprinting it would change the key every run.
    cache = tmp_path / "judge-cache"
    cache.mkdir()
    spec = PluginSpec(name="api-judge", params={"model": "judge-2024-01-01", "cache_dir": str(cache), "api_key_env": None})
    before = _plugin_identity("scorers", spec)
    (cache / "ab").mkdir()
    Path(cache / "ab" / "abcd.json").write_text("{}")
    assert _plugin_identity("scorers", spec) == before


# ----------------------------------------------------------------------------- matched baselines


def _plan(tmp_path, **overrides: Any):
    from ftsafety.harness.store import ArtifactStore
    from ftsafety.harness.tasks import build_tasks

    cfg = validate_config(canned_config(tmp_path, seeds=[0], **overrides))
    cells = plan_cells(cfg)
    tasks = build_tasks(cfg, cells, ArtifactStore(tmp_path / "store"))
    training = {cid: t.spec["training"] for t in tasks if t.kind == "train" for cid in t.cells}
    return {c.defense_label: c for c in cells if c.attack_label == "harmful"}, training


def test_a_defense_with_its_own_optimiser_gets_an_undefended_baseline_trained_the_same_way(tmp_path):
    cells, training = _plan(tmp_path, attacks=[{"name": "none"}, {"name": "harmful"}],
                            defenses=[{"name": "none"}, {"name": "prefill"}, {"name": "constrained"}],
                            excludes=[{"attack": "none", "defense": "constrained"}])
    assert set(cells) == {"none", "prefill", "constrained", "none@constrained"}
    matched, plain = cells["none@constrained"], cells["none"]
    assert matched.baseline_for == "constrained" and matched.defense.name == "none" and matched.baseline is None
    assert (cells["constrained"].baseline, cells["prefill"].baseline, plain.baseline) == ("none@constrained", "none", None)
    q24 = {"adam_beta1": 0.5, "warmup_steps": 10}
    for label in ("constrained", "none@constrained"):
        assert {k: training[cells[label].id][k] for k in q24} == q24
    assert (training[plain.id]["adam_beta1"], training[plain.id]["warmup_steps"]) == (0.9, 0)
    assert matched.of("train")[0].key != plain.of("train")[0].key
    # nothing is fine-tuned without an attack: the plain undefended cell is its own baseline
    assert not any(c.baseline_for for c in plan_cells(validate_config(canned_config(
        tmp_path, seeds=[0], defenses=[{"name": "none"}, {"name": "constrained"}]))))


def test_no_matched_baseline_when_the_grid_already_trains_like_the_defense(tmp_path):
    same = {"method": "lora", "adam_beta1": 0.5, "warmup_steps": 10}
    cells, _ = _plan(tmp_path, attacks=[{"name": "harmful"}], training=same,
                     defenses=[{"name": "none"}, {"name": "constrained"}])
    assert set(cells) == {"none", "constrained"} and cells["constrained"].baseline == "none"
    cells, _ = _plan(tmp_path, attacks=[{"name": "harmful"}],
                     defenses=[{"name": "none"}, {"name": "constrained", "params": {"adam_beta1": 0.9, "warmup_steps": 0}}])
    assert set(cells) == {"none", "constrained"}
    cells, _ = _plan(tmp_path, attacks=[{"name": "harmful"}], defenses=[{"name": "constrained"}])
    assert set(cells) == {"constrained"} and cells["constrained"].baseline is None  # nothing undefended to compare


def test_a_matched_baseline_is_skipped_where_its_defense_is_excluded(tmp_path):
    cells, _ = _plan(tmp_path, attacks=[{"name": "harmful"}], defenses=[{"name": "none"}, {"name": "constrained"}],
                     excludes=[{"attack": "harmful", "defense": "constrained"}])
    assert set(cells) == {"none"}


def test_the_aligned_prefix_is_a_stage_of_the_start_model_shared_by_attacks_and_fine_tune_methods(tmp_path):
    """The prefill defense's prefix depends on the model the attack started from, the prompt,
    k and decoding, not on the fine-tune: one prefix task per (benchmark, evaluation template),
    served by the start model's engine, read by every attacked cell's generate task — full
    fine-tunes included."""
    from ftsafety.harness.store import ArtifactStore
    from ftsafety.harness.tasks import build_tasks

    data = canned_config(tmp_path, seeds=[0], training={"method": "full"},
                         attacks=[{"name": "none"}, {"name": "harmful"},
                                  {"name": "aoa", "params": {"eval_with_training_template": True}}],
                         defenses=[{"name": "none"}, {"name": "prefill"}, {"name": "prefill", "params": {"k": 5}}])
    cfg = validate_config(data)  # prefill with full fine-tuning is a valid grid
    cells = plan_cells(cfg)
    tasks = build_tasks(cfg, cells, ArtifactStore(tmp_path / "store"))
    prefix = {cid: t for t in tasks if t.kind == "prefix" for cid in t.cells}
    by = {(c.attack_label, c.defense_label): c.id for c in cells}
    assert not any(cid in prefix for (_, d), cid in by.items() if d == "none")
    # none and harmful evaluate with the plain template: one prefix; AOA (its own template) has its
    # own; k changes it
    assert prefix[by["none", "prefill"]] is prefix[by["harmful", "prefill"]]
    assert prefix[by["aoa", "prefill"]] is not prefix[by["harmful", "prefill"]]
    assert prefix[by["harmful", "prefill[k=5]"]] is not prefix[by["harmful", "prefill"]]
    assert len({t.key for t in prefix.values()}) == 4  # (plain, AOA) x (k 15, k 5)
    first = prefix[by["harmful", "prefill"]]
    assert first.spec["weights"] == "org/some-model" and first.resources.group == "engine:m:org/some-model"
    generate = next(t for t in tasks if t.kind == "generate" and by["harmful", "prefill"] in t.cells)
    assert first.key in generate.deps and generate.upstream["prefix"].endswith(first.key)
    assert generate.spec["adapter"] is None and generate.spec["weights"].endswith("/model")  # the full fine-tune

"""Durability checkpoints (``durability:`` in a grid): what the planner adds, what the tasks read,
the config checks, and ``steps_to_break`` with its interval. The checkpoints' training, serving
and report run end to end in tests/e2e/test_organism_defenses.py."""

from __future__ import annotations

from typing import Any

import pytest

import tests.plugins.canned  # noqa: F401  (registers the canned test plugins in-process)
import tests.plugins.hooks  # noqa: F401  (example-post-train)
from ftsafety.harness.config import ConfigError, validate_config
from ftsafety.harness.durability import break_text, curve_rows, steps_to_break
from ftsafety.harness.planner import plan_cells
from ftsafety.harness.store import ArtifactStore
from ftsafety.harness.tasks import build_tasks
from tests.harness.helpers import canned_config


def _grid(tmp_path, **overrides: Any) -> dict[str, Any]:
    return canned_config(tmp_path, attacks=[{"name": "canned-finetune"}], seeds=[0], **overrides)


def _stages(cfg) -> dict[str, Any]:
    (cell,) = [c for c in plan_cells(cfg) if c.defense_label == cfg.defenses[0].name]
    return {s.slot: s for s in cell.stages}


def test_without_durability_nothing_changes_and_with_it_only_the_train_key_and_what_reads_it(tmp_path):
    plain = _stages(validate_config(_grid(tmp_path)))
    durable = _stages(validate_config(_grid(tmp_path, durability={"steps": [0, 5, 20]})))
    assert set(plain) == {"data", "train", "generate/canned-prompts", "score/canned-prompts/canned-harm"}
    assert not any("step" in slot for slot in plain)
    assert plain["data"].key == durable["data"].key
    # the fine-tune also saves checkpoints: an artifact of its own (so a stored one without
    # them is never served as if it had them)
    assert durable["train"].inputs["checkpoints"] == [5, 20] and plain["train"].key != durable["train"].key
    assert set(durable) - set(plain) == {f"{kind}/canned-prompts{scorer}/step{k}" for k in (0, 5, 20)
                                         for kind, scorer in (("generate", ""), ("score", "/canned-harm"))}


def test_step_zero_is_the_start_model_and_a_step_reads_the_fine_tunes_checkpoint(tmp_path):
    cfg = validate_config(_grid(tmp_path, durability={"steps": [0, 5]}))
    stages = _stages(cfg)
    start, at5 = stages["generate/canned-prompts/step0"], stages["generate/canned-prompts/step5"]
    assert "train" not in start.inputs and "model" in start.inputs and start.deps == []
    assert at5.inputs["train"] == stages["train"].key and at5.inputs["checkpoint"] == 5
    store = ArtifactStore(tmp_path / "store")
    tasks = {t.slot: t for t in build_tasks(cfg, plan_cells(cfg), store)}
    train_dir = store.path("train", stages["train"].key)
    assert tasks["train"].spec["checkpoints"] == [5]
    assert tasks["generate/canned-prompts/step5"].spec["adapter"] == str(train_dir / "checkpoints" / "step-5" / "adapter")
    assert tasks["generate/canned-prompts"].spec["adapter"] == str(train_dir / "adapter")
    assert tasks["generate/canned-prompts/step0"].spec.get("adapter") is None
    # one LoRA slot per adapter directory: the checkpoint is not the finished adapter
    assert tasks["generate/canned-prompts/step5"].spec["adapter_key"] != tasks["generate/canned-prompts"].spec["adapter_key"]
    # every model of the cell is served by the one engine of its base model
    assert len({t.resources.group for t in tasks.values() if t.kind == "generate"}) == 1


def test_a_weight_edit_is_applied_to_every_checkpoint(tmp_path):
    cfg = validate_config(_grid(tmp_path, defenses=[{"name": "example-post-train"}], durability={"steps": [0, 5]}))
    stages = _stages(cfg)
    edit5 = stages["post_train/step5"]
    assert edit5.inputs == {"train": stages["train"].key, "checkpoint": 5, "defense": stages["post_train"].inputs["defense"]}
    assert stages["generate/canned-prompts/step5"].inputs["post_train"] == edit5.key
    assert "post_train/step0" not in stages  # an edit of no update is the start model
    store = ArtifactStore(tmp_path / "store")
    tasks = {t.slot: t for t in build_tasks(cfg, plan_cells(cfg), store)}
    train_dir = store.path("train", stages["train"].key)
    assert tasks["post_train/step5"].upstream["train"] == str(train_dir / "checkpoints" / "step-5")
    assert tasks["generate/canned-prompts/step5"].spec["adapter"] == str(store.path("post_train", edit5.key) / "adapter")


@pytest.mark.parametrize(("durability", "training", "attacks", "expected"), [
    ({"steps": [5, 5]}, None, None, "durability.steps: a step is listed twice"),
    ({"steps": [-1]}, None, None, "durability.steps: steps must be >= 0"),
    ({"steps": []}, None, None, "durability.steps"),
    ({"steps": [5]}, {"method": "full"}, None, "attacks[0]: durability checkpoints are served as LoRA adapters"),
    ({"steps": [5]}, None, [{"name": "none"}], "durability: no attack of the grid fine-tunes"),
    ({"steps": [5], "threshold": 0}, None, None, "durability.threshold"),
])
def test_bad_durability_settings_are_named(tmp_path, durability, training, attacks, expected):
    data = _grid(tmp_path, durability=durability)
    if training:
        data["training"] = training
    if attacks:
        data["attacks"] = attacks
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems


def _row(seed: int, step: int, value: float, lo: float, hi: float, n: int = 100) -> dict[str, Any]:
    return {"model": "m", "attack": "harmful", "defense": "d", "benchmark": "b", "scorer": "s", "metric": "asr",
            "seed": seed, "step": step, "value": value, "ci_low": lo, "ci_high": hi, "n": n, "unscored": 0}


def test_steps_to_break_is_the_first_step_the_mean_reaches_the_threshold_with_its_interval():
    rows = [_row(0, 0, 0.0, 0.0, 0.04), _row(0, 5, 0.40, 0.31, 0.50), _row(0, 10, 0.62, 0.52, 0.71),
            _row(0, 20, 0.95, 0.89, 0.98)]
    (found,) = steps_to_break(curve_rows(rows), 0.5)
    # one seed: the curve is that seed's; its interval reaches 0.5 from above at step 5 and
    # from below at step 10
    assert (found["steps_to_break"], found["stb_low"], found["stb_high"], found["last_step"]) == (10, 5, 10, 20)
    assert break_text(found) == ("10", "[5, 10]")


def test_a_curve_that_never_surely_breaks_says_so():
    rows = [_row(0, 0, 0.0, 0.0, 0.04), _row(0, 80, 0.35, 0.26, 0.45)]
    (found,) = steps_to_break(curve_rows(rows), 0.5)
    assert (found["steps_to_break"], found["stb_low"], found["stb_high"]) == (None, None, None)
    assert break_text(found) == ("> 80", "[> 80, > 80]")


def test_seeds_that_disagree_widen_the_interval():
    # seed 0 breaks at step 5, seed 1 only at step 20: the mean at 5 is below 0.5, and the
    # seed spread makes the interval of the mean wide at steps 5 and 10
    rows = [_row(0, 0, 0.0, 0.0, 0.04), _row(1, 0, 0.0, 0.0, 0.04),
            _row(0, 5, 0.8, 0.71, 0.87), _row(1, 5, 0.1, 0.05, 0.17),
            _row(0, 10, 0.9, 0.83, 0.95), _row(1, 10, 0.3, 0.22, 0.40),
            _row(0, 20, 0.95, 0.89, 0.98), _row(1, 20, 0.9, 0.83, 0.95)]
    curves = curve_rows(rows)
    (found,) = steps_to_break(curves, 0.5)
    assert found["n_seeds"] == 2 and found["steps_to_break"] == 10
    assert found["stb_low"] == 5 and found["stb_high"] == 20
    at10 = next(c for c in curves if c["step"] == 10)
    assert at10["ci_low"] < 0.5 < at10["mean"]  # broken on average, not surely


def _stored(store: ArtifactStore, kind: str, key: str, files: dict[str, Any]) -> None:
    import json

    with store.writing(kind, key, {}) as out:
        for name, content in files.items():
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, list):
                path.write_text("".join(json.dumps(r) + "\n" for r in content))
            else:
                path.write_text(json.dumps(content))


def _evaluated(store: ArtifactStore, name: str, harmful: int, slot_suffix: str = "") -> dict[str, dict[str, Any]]:
    """A generate and a score artifact of 4 harmful prompts, ``harmful`` of them judged harmful."""
    gen = [{"sample_id": f"s{i}", "kind": "harmful", "response": "r"} for i in range(4)]
    scores = [{"sample_id": f"s{i}", "scorer": "oracle", "harmful": i < harmful, "refused": i >= harmful,
               "status": "ok"} for i in range(4)]
    _stored(store, "generate", f"gen-{name}", {"generations.jsonl": gen})
    _stored(store, "score", f"score-{name}", {"scores.jsonl": scores})
    return {f"generate/b{slot_suffix}": {"stage": "generate", "key": f"gen-{name}", "benchmark": "b", "scorer": None},
            f"score/b/oracle{slot_suffix}": {"stage": "score", "key": f"score-{name}", "benchmark": "b", "scorer": "oracle"}}


def test_curve_points_are_read_at_the_steps_the_checkpoints_hold(tmp_path):
    from ftsafety.harness.durability import durability_rows

    store = ArtifactStore(tmp_path / "store")
    # a 30-step run checkpointed at 10 and (past its end) at 50: the latter is the finished model
    _stored(store, "train", "t", {"train_summary.json": {"steps": 30},
                                  "checkpoints/step-10/train_summary.json": {"steps": 10},
                                  "checkpoints/step-50/train_summary.json": {"steps": 30, "requested_step": 50}})
    stages = {"train": {"stage": "train", "key": "t", "inputs": {"checkpoints": [10, 50]}}, **_evaluated(store, "final", 4)}
    checkpoints = {}
    for step, harmful in ((0, 0), (10, 1), (50, 3)):
        for slot, st in _evaluated(store, f"at{step}", harmful, f"/step{step}").items():
            checkpoints[slot] = st | {"step": step}
    record = {"cell_id": "c", "model": "m", "attack": "harmful", "defense": "d", "seed": 0, "baseline": None,
              "stages": stages, "checkpoints": checkpoints}
    before = dict(stages)
    rows = [r for r in durability_rows(tmp_path, [record], store) if r["metric"] == "asr"]
    assert [(r["step"], r["value"], r["n"]) for r in rows] == [(0, 0.0, 4), (10, 0.25, 4), (30, 1.0, 4)]
    assert record["stages"] == before  # the record is read, not changed


def test_a_fine_tune_of_no_steps_is_one_point_and_its_record_is_left_alone(tmp_path):
    # a screening defense dropped every example: the "fine-tune" is the start model, step 0
    from ftsafety.harness.durability import durability_rows

    store = ArtifactStore(tmp_path / "store")
    _stored(store, "train", "t", {"train_summary.json": {"steps": 0},
                                  "checkpoints/step-10/train_summary.json": {"steps": 0, "requested_step": 10}})
    stages = {"train": {"stage": "train", "key": "t", "inputs": {"checkpoints": [10]}}, **_evaluated(store, "final", 0)}
    checkpoints = {slot: st | {"step": step} for step in (0, 10)
                   for slot, st in _evaluated(store, f"at{step}", 0, f"/step{step}").items()}
    record = {"cell_id": "c", "model": "m", "attack": "harmful", "defense": "d", "seed": 0, "baseline": None,
              "stages": stages, "checkpoints": checkpoints}
    before = dict(stages)
    rows = [r for r in durability_rows(tmp_path, [record], store) if r["metric"] == "asr"]
    assert [(r["step"], r["value"]) for r in rows] == [(0, 0.0)]
    assert record["stages"] == before

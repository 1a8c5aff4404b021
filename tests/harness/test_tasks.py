"""Stage tasks are plain data: every task of a plan round-trips through JSON, and a data, a
train, a generate and a score task on the organism each run in a fresh interpreter
(``python -m ftsafety.harness.stages``) from nothing but their JSON and the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ftsafety.harness.config import load_config, validate_config
from ftsafety.harness.executor import schedule
from ftsafety.harness.planner import plan_cells
from ftsafety.harness.store import ArtifactStore, read_jsonl
from ftsafety.harness.tasks import KIND_ORDER, StageTask, build_tasks
from tests.harness.helpers import REPO


def test_every_task_of_the_ci_plan_round_trips_through_json(tmp_path):
    cfg = load_config(REPO / "configs" / "organism-ci.yaml")
    store = ArtifactStore(tmp_path / "store")
    tasks = build_tasks(cfg, plan_cells(cfg), store)
    assert {t.kind for t in tasks} >= {"align", "data", "screen", "train", "generate", "score"}
    for task in tasks:
        again = StageTask.model_validate_json(task.model_dump_json())
        assert again == task
        json.loads(task.model_dump_json())  # nothing but JSON values inside
    # identical work is one task; the cells needing it are all named
    assert len({(t.kind, t.key) for t in tasks}) == len(tasks)
    # one engine group per base model: the organism and the augment-aligned model
    groups = {t.resources.group for t in tasks if t.kind == "generate"}
    assert len(groups) == 2
    waves = schedule(tasks, store)
    assert [w.kind for w in waves] == [k for k in KIND_ORDER if any(t.kind == k for t in tasks)]


@pytest.mark.slow
def test_data_train_generate_score_tasks_run_in_fresh_subprocesses(organism_dir, tmp_path):
    cfg = validate_config({
        "name": "tasks",
        "output_dir": str(tmp_path / "runs"),
        "models": [{"name": "organism", "path": str(organism_dir / "aligned")}],
        "attacks": [{"name": "harmful", "params": {"n": 16}}],
        "training": {"max_steps": 4, "batch_size": 4, "lr": 3.0e-3, "lora": {"r": 8, "alpha": 16}},
        "benchmarks": [{"name": "organism-harmful"}],
        "scorers": [{"name": "organism-oracle"}],
        "generation": {"backend": "hf", "max_tokens": 24},
        "limit": 4,
    })
    store = ArtifactStore(tmp_path / "runs" / ".cache")
    tasks = build_tasks(cfg, plan_cells(cfg), store)
    assert [t.kind for t in tasks] == ["data", "train", "generate", "score"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for task in tasks:
        path = tmp_path / f"{task.kind}.json"
        path.write_text(task.model_dump_json())
        proc = subprocess.run([sys.executable, "-m", "ftsafety.harness.stages", str(path), str(store.root)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1])["complete"] is True
        assert store.is_complete(task.kind, task.key), task.kind
    data, train, generate, score = tasks
    assert len(read_jsonl(store.path("data", data.key) / "train.jsonl")) == 16
    assert (store.path("train", train.key) / "adapter" / "adapter_config.json").is_file()
    rows = read_jsonl(store.path("generate", generate.key) / "generations.jsonl")
    assert len(rows) == 4 and all(r["adapter"] == train.key for r in rows)
    scores = read_jsonl(store.path("score", score.key) / "scores.jsonl")
    assert [s["sample_id"] for s in scores] == [r["sample_id"] for r in rows]

"""Resume and caching semantics of the run store, on the canned test backend (cheap stages)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tests.plugins.canned  # noqa: F401  (registers the canned test plugins in-process)
from ftsafety.harness.config import validate_config
from ftsafety.harness.pipeline import run_grid
from tests.harness.helpers import REPO, canned_config, cli, write_config


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def call_log(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("CANNED_CALL_LOG", str(log))
    return log


def test_rerun_skips_finished_stages(tmp_path, call_log):
    cfg = validate_config(canned_config(tmp_path))
    first = run_grid(cfg)
    assert first.executed == {"generate": 2, "score": 2}
    lb = (first.run_dir / "leaderboard.csv").read_text()
    second = run_grid(cfg)
    assert second.executed == {}
    assert (second.run_dir / "leaderboard.csv").read_text() == lb
    assert len([c for c in _calls(call_log) if c.startswith("generate")]) == 2


def test_changing_only_a_scorer_rescores_without_regenerating(tmp_path, call_log):
    data = canned_config(tmp_path)
    run_grid(validate_config(data))
    n_generate = len([c for c in _calls(call_log) if c.startswith("generate")])
    data["scorers"] = [{"name": "canned-harm"}, {"name": "keyword", "params": {"list": "prefix"}}]
    result = run_grid(validate_config(data))
    assert result.executed == {"score": 2}
    assert len([c for c in _calls(call_log) if c.startswith("generate")]) == n_generate


def test_changing_only_sampling_regenerates_without_retraining(tmp_path, call_log, monkeypatch):
    trained: list[str] = []

    def fake_train(data_file, out, **settings):  # a cheap stand-in for TRL
        trained.append(settings["ctx"].model.name)
        (out / "adapter").mkdir()
        (out / "adapter" / "weights.txt").write_text(data_file.read_text())
        return {}

    import ftsafety.harness.training as harness_training

    monkeypatch.setattr(harness_training, "train_sft", fake_train)
    data = canned_config(tmp_path, attacks=[{"name": "none"}, {"name": "canned-finetune"}], seeds=[0])
    first = run_grid(validate_config(data))
    assert first.executed == {"data": 1, "train": 1, "generate": 2, "score": 2}
    data["generation"]["temperature"] = 0.7
    second = run_grid(validate_config(data))
    assert second.executed == {"generate": 2, "score": 2}
    assert trained == ["m"]
    data["training"] = {"lr": 1e-3}
    third = run_grid(validate_config(data))
    assert third.executed == {"train": 1, "generate": 1, "score": 1}


def test_plan_reports_done_pending_and_why_stale(tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", canned_config(tmp_path))
    r = cli("plan", str(cfg_path))
    assert "2 pending" in r.stdout
    assert cli("run", str(cfg_path)).returncode == 0
    r = cli("plan", str(cfg_path))
    assert "2 done" in r.stdout
    r = cli("plan", str(cfg_path), "--set", "generation.temperature=0.5")
    assert "2 stale" in r.stdout and "sampling.temperature changed" in r.stdout


def test_identical_work_shared_across_cells_runs_once(tmp_path, call_log):
    # two defenses that do not touch generation: the (none, none) work is shared, not redone
    data = canned_config(tmp_path, defenses=[{"name": "none"}, {"name": "none", "label": "none-b"}], seeds=[0])
    result = run_grid(validate_config(data))
    assert result.executed == {"generate": 1, "score": 1}
    rows = (result.run_dir / "leaderboard.csv").read_text().splitlines()
    assert sum(",none-b," in r for r in rows) == sum(",none,0," in r for r in rows) > 0


def test_a_half_written_artifact_is_never_reused(tmp_path):
    from ftsafety.harness.store import ArtifactStore

    store = ArtifactStore(tmp_path / "cache")
    with pytest.raises(RuntimeError):
        with store.writing("generate", "k1", {}) as out:
            (out / "generations.jsonl").write_text("partial")
            raise RuntimeError("killed")
    assert not store.is_complete("generate", "k1")
    assert not store.path("generate", "k1").exists()
    assert list((tmp_path / "cache" / "generate").iterdir()) == []


def _run_and_kill(cfg_path: Path, delay: float, env: dict[str, str]) -> None:
    full_env = {**os.environ, **env, "FTSAFETY_PLUGINS": "tests.plugins.canned", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ftsafety.harness", "run", str(cfg_path)], cwd=REPO, env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_gives_the_same_leaderboard(tmp_path):
    reference = write_config(tmp_path / "ref.yaml", canned_config(tmp_path, name="ref", output_dir=str(tmp_path / "ref-runs"),
                                                                       seeds=[0, 1, 2]))
    assert cli("run", str(reference)).returncode == 0
    expected = (tmp_path / "ref-runs" / "ref" / "leaderboard.csv").read_text()

    killed = write_config(tmp_path / "k.yaml", canned_config(tmp_path, name="ref", seeds=[0, 1, 2]))
    rng = random.Random(1234)
    for _ in range(4):  # the canned backend sleeps 0.15 s a prompt: kills land inside stages
        _run_and_kill(killed, rng.uniform(0.8, 3.0), {"CANNED_DELAY": "0.15"})
    r = cli("run", str(killed))
    assert r.returncode == 0, r.stderr
    got = (tmp_path / "runs" / "ref" / "leaderboard.csv").read_text()
    assert got == expected
    manifest = json.loads((tmp_path / "runs" / "ref" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    leftovers = list((tmp_path / "runs" / ".cache").rglob(".tmp-*"))
    assert leftovers == []


# ----------------------------------------------------------------------------- damaged artifacts


def _generations_of(run_dir: Path) -> Path:
    record = json.loads(next((run_dir / "cells").glob("*__s0/cell.json")).read_text())
    key = record["stages"]["generate/canned-prompts"]["key"]
    return run_dir.parent / ".cache" / "generate" / key / "generations.jsonl"


def test_a_truncated_generation_artifact_is_recomputed_not_used(tmp_path, call_log):
    cfg = validate_config(canned_config(tmp_path))
    first = run_grid(cfg)
    lb = (first.run_dir / "leaderboard.csv").read_text()
    gens = _generations_of(first.run_dir)
    gens.write_text("".join(gens.read_text().splitlines(keepends=True)[:2]))
    second = run_grid(cfg)
    assert second.executed == {"generate": 1}  # its scores are intact and still match the regenerated rows
    assert len(gens.read_text().splitlines()) == 6
    assert (second.run_dir / "leaderboard.csv").read_text() == lb


def test_report_on_a_truncated_artifact_is_an_error_naming_it(tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", canned_config(tmp_path))
    assert cli("run", str(cfg_path)).returncode == 0
    run_dir = tmp_path / "runs" / "t"
    gens = _generations_of(run_dir)
    gens.write_text(gens.read_text()[:40])
    r = cli("report", str(run_dir))
    assert r.returncode == 2, r.stderr
    assert str(gens.parent) in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- the run directory


def test_cells_of_an_earlier_config_are_listed_as_stale_not_reported(tmp_path):
    data = canned_config(tmp_path, attacks=[{"name": "none"}, {"name": "none", "label": "old-attack"}], seeds=[0])
    run_grid(validate_config(data))
    data["attacks"] = [{"name": "none"}]
    result = run_grid(validate_config(data))
    assert (result.run_dir / "cells" / "m__old-attack__none__s0" / "cell.json").exists()
    leaderboard = (result.run_dir / "leaderboard.csv").read_text()
    assert "old-attack" not in leaderboard and "m__none__none__s0" in leaderboard
    assert "old-attack" not in (result.run_dir / "leaderboard_summary.csv").read_text()
    report = (result.run_dir / "report.md").read_text()
    assert "Stale cells" in report and "m__old-attack__none__s0" in report.split("Stale cells")[1]
    r = cli("report", str(result.run_dir))
    assert r.returncode == 0 and "m__old-attack__none__s0" in r.stderr  # the console says so too
    assert "old-attack" not in (result.run_dir / "leaderboard.csv").read_text()


def test_labels_that_climb_out_of_the_run_dir_write_nothing_outside_it(tmp_path):
    data = canned_config(tmp_path, benchmarks=[{"name": "canned-prompts", "label": "../../x"}],
                         scorers=[{"name": "canned-harm", "label": "../../../y"}], seeds=[0])
    outside_before = {p for p in tmp_path.rglob("*") if "runs" not in p.relative_to(tmp_path).parts}
    result = run_grid(validate_config(data))
    outside_after = {p for p in tmp_path.rglob("*") if "runs" not in p.relative_to(tmp_path).parts}
    assert outside_after == outside_before
    cache = tmp_path / "runs" / ".cache"
    for p in (tmp_path / "runs").rglob("*"):  # everything the run wrote is in its run dir or the store
        assert p.resolve().is_relative_to(result.run_dir.resolve()) or p.resolve().is_relative_to(cache.resolve()) \
            or p == cache, p
    assert (result.run_dir / "generations" / "m__none__none__s0__x.jsonl").exists()
    assert (result.run_dir / "scores" / "m__none__none__s0__x__y.jsonl").exists()
    assert (result.run_dir / "cells" / "m__none__none__s0" / "logs" / "generate__..__..__x.log").exists()


def test_a_second_run_on_a_locked_run_dir_fails_at_once(tmp_path):
    from filelock import FileLock

    from ftsafety.harness.rundir import LOCK_FILE

    cfg_path = write_config(tmp_path / "c.yaml", canned_config(tmp_path))
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    with FileLock(run_dir / LOCK_FILE):  # as a running `ftsafety run` holds it
        started = time.perf_counter()
        r = cli("run", str(cfg_path))
        assert r.returncode == 2
        err = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(err) == 1 and str(run_dir) in err[0] and "another ftsafety run" in err[0], r.stderr
        assert time.perf_counter() - started < 60
        assert not (run_dir / "cells").exists()
    assert cli("run", str(cfg_path)).returncode == 0  # released: the next run goes ahead

"""A judge outage during ``ftsafety run`` is not a result (issue 11, section 2).

The API judge's endpoint is a real HTTP server on 127.0.0.1 that fails every request: the
run keeps the other stages' work, leaves the judge's score artifacts incomplete, says so on one
line and exits 3; once the server answers, a rerun scores only what is missing.
"""

from __future__ import annotations

import json

import tests.plugins.canned  # noqa: F401  (registers the canned test plugins in-process)
from tests.evals.test_api_judge import server  # noqa: F401  (the stub endpoint fixture)
from tests.harness.helpers import canned_config, cli, write_config


def _config(tmp_path, url: str) -> dict:
    judge = {"name": "api-judge", "label": "stub", "params": {
        "base_url": url, "model": "stub-judge-2024-01-01", "api_key_env": None,
        "max_retries": 1, "initial_backoff": 0.001, "timeout": 5, "concurrency": 2,
    }}
    return canned_config(tmp_path, scorers=[{"name": "canned-harm"}, judge])


def _completeness(run_dir, slot_prefix: str) -> list[bool]:
    """Whether each cell's stages of a kind are complete, as the run records them."""
    flags = []
    for record in sorted(run_dir.glob("cells/*/cell.json")):
        stages = json.loads(record.read_text())["stages"]
        flags += [s["complete"] for slot, s in stages.items() if slot.startswith(slot_prefix)]
    return flags


def test_judge_outage_leaves_its_scores_incomplete_and_exits_3_until_a_rerun(server, tmp_path):  # noqa: F811
    server.down = True
    data = _config(tmp_path, server.url)
    cfg_path = write_config(tmp_path / "grid.yaml", data)
    run_dir = tmp_path / "runs" / "t"

    down = cli("run", str(cfg_path))
    assert down.returncode == 3, down.stderr[-3000:]
    error_lines = [line for line in down.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in down.stderr
    assert "scorer 'stub': 12 item(s) in 2 score artifact(s) not judged" in error_lines[0]
    assert "HTTP 503" in error_lines[0] and "rerun to retry" in error_lines[0]
    # Generation and the other scorer are recorded; the judge's artifacts are not.
    assert _completeness(run_dir, "generate/") == [True, True]
    assert _completeness(run_dir, "score/canned-prompts/canned-harm") == [True, True]
    assert _completeness(run_dir, "score/canned-prompts/stub") == [False, False]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["incomplete"]["stub"]["items"] == 12 and manifest["status"] == "incomplete"
    # The first batch found the endpoint down: the second artifact sent nothing.
    calls_down = len(server.calls)
    assert calls_down <= 4 * 2

    server.down = False
    up = cli("run", str(cfg_path))
    assert up.returncode == 0, up.stderr[-3000:]
    assert "error:" not in up.stderr
    assert _completeness(run_dir, "score/canned-prompts/stub") == [True, True]
    # only the judgments that were missing: both seeds' canned answers are the same 6 pairs
    assert len(server.calls) - calls_down == 6
    assert "ran score: 2" in up.stderr  # generation and canned-harm reused

    third = cli("run", str(cfg_path))
    assert third.returncode == 0 and len(server.calls) - calls_down == 6  # nothing left to ask

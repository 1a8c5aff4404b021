"""The artifact store's integrity record, file modes, and file-name-safe labels."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ftsafety.harness.paths import safe_label
from ftsafety.harness.store import (
    COMPLETE,
    NOT_WRITTEN,
    ArtifactStore,
    atomic_write_text,
    write_jsonl,
)


def _artifact(tmp_path: Path) -> tuple[ArtifactStore, Path]:
    store = ArtifactStore(tmp_path / "cache")
    with store.writing("generate", "k1", {"x": 1}) as out:
        write_jsonl(out / "generations.jsonl", [{"sample_id": f"p{i}", "continuation": "ok"} for i in range(6)])
        (out / "model").mkdir()
        (out / "model" / "weights.bin").write_bytes(b"\0" * 1000)
    return store, store.path("generate", "k1")


def test_the_marker_records_size_digest_and_rows_of_every_file(tmp_path):
    store, path = _artifact(tmp_path)
    files = json.loads((path / COMPLETE).read_text())["files"]
    assert set(files) == {"generations.jsonl", "model/weights.bin"}
    assert files["generations.jsonl"]["rows"] == 6
    assert files["model/weights.bin"]["size"] == 1000 and len(files["model/weights.bin"]["digest"]) == 64
    assert store.is_complete("generate", "k1") and store.problem("generate", "k1") is None


def test_a_truncated_artifact_is_not_complete(tmp_path):
    store, path = _artifact(tmp_path)
    lines = (path / "generations.jsonl").read_text().splitlines(keepends=True)
    (path / "generations.jsonl").write_text("".join(lines[:3]))
    assert not store.is_complete("generate", "k1")
    assert "3 of 6 rows" in store.problem("generate", "k1")


@pytest.mark.parametrize("damage", ["edit-same-size", "delete-file"])
def test_an_edited_or_incomplete_artifact_is_not_complete(tmp_path, damage):
    store, path = _artifact(tmp_path)
    assert store.is_complete("generate", "k1")  # verified once: the memo must not hide the change
    weights = path / "model" / "weights.bin"
    if damage == "delete-file":
        weights.unlink()
    else:
        weights.write_bytes(b"\1" * 1000)
    assert not ArtifactStore(tmp_path / "cache").is_complete("generate", "k1")
    assert not store.is_complete("generate", "k1")


def test_an_artifact_from_before_integrity_records_is_not_complete(tmp_path):
    store, path = _artifact(tmp_path)
    (path / COMPLETE).write_text(json.dumps({"stage": "generate", "key": "k1", "inputs": {}}))
    assert not store.is_complete("generate", "k1")
    assert "older ftsafety" in store.problem("generate", "k1")
    assert store.problem("generate", "never-written") == NOT_WRITTEN


def test_rewriting_a_damaged_artifact_replaces_it(tmp_path):
    store, path = _artifact(tmp_path)
    (path / "generations.jsonl").write_text("")
    with store.writing("generate", "k1", {"x": 1}) as out:
        write_jsonl(out / "generations.jsonl", [{"sample_id": "p0"}])
    assert store.is_complete("generate", "k1")
    assert (path / "generations.jsonl").read_text().count("\n") == 1


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == mode


@pytest.mark.parametrize(
    ("label", "expected"),
    [("../../x", "x"), ("..", "_"), ("/etc/passwd", "etc-passwd"), ("a\\b", "a-b"), ("", "_"), (".hidden", "hidden"),
     ("harmful[lr=1e-4]", "harmful-lr=1e-4"), ("organism-harmful", "organism-harmful")],
)
def test_safe_label_is_one_plain_file_name(label, expected):
    assert safe_label(label) == expected


def test_safe_label_keeps_long_labels_distinct_and_short():
    a, b = safe_label("x" * 300 + "a"), safe_label("x" * 300 + "b")
    assert a != b and len(a) <= 120 and safe_label(a) == a


def test_sweep_keeps_live_and_recent_foreign_temporaries(tmp_path):
    """A store on a shared filesystem: this machine's leftovers of dead processes go; another
    machine's temporaries (a Ray worker there may be writing) stay until a day old."""
    import time

    from ftsafety.harness import store as store_module

    store = ArtifactStore(tmp_path)
    stage = tmp_path / "train"
    stage.mkdir()
    host = store_module._HOST
    dead = stage / f".tmp-abc-{host}-999999999-0000"
    live = stage / f".tmp-abc-{host}-{os.getpid()}-0001"
    foreign = stage / ".tmp-abc-other_node-1234-0002"
    stale_foreign = stage / ".tmp-abc-other_node-1234-0003"
    old_style = stage / ".tmp-abc-999999999-0004"  # written before names carried the host
    for d in (dead, live, foreign, stale_foreign, old_style):
        d.mkdir()
    day_ago = time.time() - 25 * 3600
    os.utime(stale_foreign, (day_ago, day_ago))
    assert store.sweep_temporaries() == 3
    assert sorted(p.name for p in stage.iterdir()) == sorted([live.name, foreign.name])

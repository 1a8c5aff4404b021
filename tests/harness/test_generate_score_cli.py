"""``ftsafety generate`` + ``ftsafety score`` on the organism: JSONL a user can read."""

from __future__ import annotations

import json

import pytest

from tests.harness.helpers import cli


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_generate_then_score_on_the_organism(organism_dir, tmp_path, backend):
    if backend == "vllm":
        pytest.importorskip("vllm")
    gens = tmp_path / "gens.jsonl"
    r = cli("generate", "--model", str(organism_dir / "aligned"), "--benchmark", "organism-harmful",
            "--backend", backend, "--limit", "12", "--max-tokens", "48", "--out", str(gens))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in gens.read_text().splitlines()]
    assert len(rows) == 12
    first = rows[0]
    for key in ("sample_id", "prompt", "messages", "rendered_prompt", "prefix", "continuation", "response", "truncated", "meta"):
        assert key in first
    assert first["response"] == first["prefix"] + first["continuation"]
    assert first["rendered_prompt"].endswith("<|assistant|>")

    scores = tmp_path / "scores.jsonl"
    r = cli("score", "--generations", str(gens), "--scorer", "organism-oracle", "--out", str(scores))
    assert r.returncode == 0, r.stderr
    labels = [json.loads(line) for line in scores.read_text().splitlines()]
    assert [x["sample_id"] for x in labels] == [x["sample_id"] for x in rows]
    assert "asr" in r.stdout and "refusal_rate" in r.stdout
    # the aligned organism refuses held-out harmful prompts
    assert sum(x["refused"] for x in labels) >= 10 and sum(x["harmful"] for x in labels) <= 1

    r = cli("score", "--generations", str(gens), "--scorer", "keyword", "--params", "list=xstest", "--out", str(tmp_path / "kw.jsonl"))
    assert r.returncode == 0, r.stderr


def test_score_rejects_a_file_that_is_not_generations(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    r = cli("score", "--generations", str(bad), "--scorer", "keyword", "--out", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "line 1: 'sample_id' is missing" in r.stderr and "Traceback" not in r.stderr
    r = cli("score", "--generations", str(tmp_path / "missing.jsonl"), "--scorer", "keyword", "--out", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_generate_rejects_a_directory_that_is_not_an_adapter(tmp_path):
    r = cli("generate", "--model", "organism://default", "--adapter", str(tmp_path), "--benchmark", "organism-harmful",
            "--out", str(tmp_path / "g.jsonl"))
    assert r.returncode == 2 and "not a PEFT adapter directory" in r.stderr

"""Attack data from a registered benchmark's prompts (``prompts:``), with the data's answers or
the unaligned model's, and the evaluation prompts excluded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftsafety.attacks.common import SourceParams, load_pairs
from ftsafety.harness.errors import UserError
from ftsafety.harness.prompts import normalise


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_answers_from_the_data_with_evaluation_prompts_excluded(tmp_path):
    tasks = _jsonl(tmp_path / "seed.jsonl", [
        {"id": "t0", "instruction": "Name a colour.", "instances": [{"input": "", "output": "Blue."}]},
        {"id": "t1", "instruction": "Add the numbers.", "instances": [{"input": "2 3", "output": "5"}]},
        {"id": "t2", "instruction": "Say hi!", "instances": [{"input": "", "output": "Hi."}]},
    ])
    evaluated = _jsonl(tmp_path / "eval.jsonl", [{"prompt": "say HI"}])
    params = SourceParams(prompts={"name": "self-instruct-seed", "params": {"path": tasks}},
                          exclude=[{"name": "benign-prompts", "params": {"path": evaluated}}])
    pairs, fingerprint = load_pairs(params, ctx=None, kind="benign", who="attack 'benign'")
    assert [(p.prompt, p.response) for p in pairs] == [("Name a colour.", "Blue."), ("Add the numbers.\n\n2 3", "5")]
    assert normalise("Say hi!") not in {normalise(p.prompt) for p in pairs}
    assert fingerprint.startswith("benchmark:") and "answers=dataset" in fingerprint


def test_a_benchmark_without_answers_needs_answers_unaligned(tmp_path):
    prompts = _jsonl(tmp_path / "p.jsonl", [{"prompt": "Explain tides."}])
    params = SourceParams(prompts={"name": "benign-prompts", "params": {"path": prompts}})
    with pytest.raises(UserError, match="answers: unaligned"):
        load_pairs(params, ctx=None, kind="benign", who="attack 'benign'")

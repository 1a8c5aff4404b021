"""``ftsafety kl``: per-token KL on harmful answers, and Q24's shallow-alignment shape on the organism.

The organism is built as J23/J24 describe real aligned models: safety tuning adds a refusal
wrapper over an intact capability. Teacher-forced on a harmful answer, the aligned model should
therefore differ from the base model at the first response token (where it would start its
refusal) and hardly at all once the harmful answer is under way — Q24's Fig. 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftsafety.harness.errors import UserError
from ftsafety.harness.kl import (
    KLSide,
    harmful_answers,
    parse_side,
    per_token_kl,
    split_model_spec,
)
from ftsafety.harness.plugins import EvalPrompt
from ftsafety.harness.registry import benchmarks


@pytest.fixture(scope="module")
def harmful_items():
    items = benchmarks.get("organism-harmful")().load(None)
    return items, harmful_answers(items, "organism-harmful")


@pytest.fixture(scope="module")
def aligned_vs_base(organism_dir, harmful_items):
    items, answers = harmful_items
    a = KLSide("aligned", str(organism_dir / "aligned"))
    b = KLSide("base", str(organism_dir / "base"))
    return per_token_kl(a, b, items, answers, benchmark="organism-harmful", max_tokens=64)


def test_aligned_vs_base_kl_is_concentrated_in_the_first_tokens(aligned_vs_base):
    """Q24's shallow alignment. Measured on seed 0 (2 CPU cores): position 0 ≈ 14.2 nats,
    position 1 ≈ 0.08, positions 5+ ≈ 0.002 on average, over 96 prompts of 24 answer tokens."""
    kl = aligned_vs_base.mean_kl
    assert aligned_vs_base.n_prompts == 96 and len(kl) >= 20
    early, late = kl[:3], kl[5:]
    late_mean = sum(late) / len(late)
    assert kl[0] > 1.0, kl[:5]
    assert kl[0] == max(kl)
    assert sum(early) / len(early) > 20 * late_mean, (early, late_mean)


def test_every_position_counts_every_prompt_that_reaches_it(aligned_vs_base):
    n = aligned_vs_base.n
    assert n[0] == aligned_vs_base.n_prompts
    assert all(x >= y for x, y in zip(n, n[1:], strict=False))  # answers end, never restart
    assert all(v >= 0 for v in aligned_vs_base.mean_kl)


def test_same_model_on_both_sides_is_zero_and_an_adapter_is_not(organism_dir, harmful_items, tmp_path):
    from tests.harness.backends.tiny_model import build_lora_adapter

    items, answers = harmful_items
    aligned = str(organism_dir / "aligned")
    adapter = build_lora_adapter(aligned, tmp_path / "adapter", seed=1, scale=0.3)
    plain = KLSide("aligned", aligned)
    with_adapter = KLSide("aligned+lora", aligned, str(adapter))
    same = per_token_kl(plain, plain, items[:4], answers[:4], benchmark="organism-harmful", max_tokens=8)
    assert max(same.mean_kl) < 1e-6
    # Both sides share one copy of the weights: the plain side must run with the adapter off.
    moved = per_token_kl(with_adapter, plain, items[:4], answers[:4], benchmark="organism-harmful", max_tokens=8)
    assert min(moved.mean_kl) > 1e-4
    back = per_token_kl(plain, with_adapter, items[:4], answers[:4], benchmark="organism-harmful", max_tokens=8)
    assert min(back.mean_kl) > 1e-4


def test_cli_writes_json_and_png(organism_dir, tmp_path, capsys):
    from ftsafety.harness.cli import main

    out = tmp_path / "kl"
    code = main(["kl", "--a", str(organism_dir / "aligned"), "--b", str(organism_dir / "base"),
                 "--benchmark", "organism-harmful", "--limit", "8", "--max-tokens", "6", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "kl.json").read_text())
    assert data["n_prompts"] == 8 and len(data["positions"]) == 6
    assert data["positions"][0] == {"position": 0, "mean_kl": data["mean_kl"][0], "n": 8}
    assert (out / "kl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmark", "organism-benign"], "not a harmful-prompt set"),
        (["--benchmark", "no-such-benchmark"], "no-such-benchmark"),
        (["--b", "/does/not/exist"], "neither a directory"),
        (["--b", "BASE:/tmp"], "not a PEFT adapter directory"),
    ],
)
def test_user_mistakes_are_one_line_errors_with_exit_code_2(organism_dir, args, message, capsys):
    from ftsafety.harness.cli import main

    base = ["--a", str(organism_dir / "aligned"), "--b", str(organism_dir / "base"), "--benchmark", "organism-harmful"]
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[base.index(flag) + 1] = value.replace("BASE", str(organism_dir / "base"))
    assert main(["kl", *base]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_split_model_spec_keeps_scheme_colons():
    assert split_model_spec("organism://default") == ("organism://default", None)
    assert split_model_spec("organism://default/base:/a/adapter") == ("organism://default/base", "/a/adapter")
    assert split_model_spec("/models/llama:/runs/x/adapter") == ("/models/llama", "/runs/x/adapter")
    assert split_model_spec("meta-llama/Llama-2-7b-chat-hf") == ("meta-llama/Llama-2-7b-chat-hf", None)


def test_parse_side_resolves_local_dirs_and_adapters(organism_dir, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    ref = parse_side(f"{organism_dir / 'aligned'}:{tmp_path}", what="--a")
    assert ref.path == str(organism_dir / "aligned") and ref.adapter == str(tmp_path.resolve())


def _hub_item(**meta: str) -> EvalPrompt:
    return EvalPrompt(id="x:0", prompt="how do i do a bad thing", kind="harmful", meta=dict(meta))


def test_hub_benchmarks_need_a_column_of_harmful_answers():
    # AdvBench's `target` is a "Sure, here is" prefix, not an answer: never picked on its own.
    with pytest.raises(UserError, match="--response-column"):
        harmful_answers([_hub_item(target="Sure, here is")], "advbench")
    assert harmful_answers([_hub_item(target="Sure", harmful_response="step 1")], "advbench") == ["step 1"]
    assert harmful_answers([_hub_item(target="Sure, here is")], "advbench", "target") == ["Sure, here is"]
    with pytest.raises(UserError, match="no column 'answer'"):
        harmful_answers([_hub_item(response="r")], "advbench", "answer")


def test_a_local_file_with_harmful_answers_works_through_the_benchmark_loader(tmp_path: Path):
    rows = [{"prompt": f"bad request {i}", "target": "Sure", "harmful_response": f"answer {i}"} for i in range(3)]
    path = tmp_path / "advbench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = benchmarks.get("advbench")({"path": str(path)}).load(None)
    assert harmful_answers(items, "advbench") == ["answer 0", "answer 1", "answer 2"]


def test_the_answer_span_stops_where_the_answer_does(organism_dir, harmful_items):
    """A template that appends text after the assistant turn (Gemma: ``<end_of_turn>\\n``) must
    not put it into the compared positions; the answer's tokens are exactly its own."""
    from transformers import AutoTokenizer

    from ftsafety.harness.kl import build_example

    tok = AutoTokenizer.from_pretrained(organism_dir / "aligned")
    items, answers = harmful_items
    plain = build_example(tok, items[0], answers[0], max_tokens=1000)
    tok.chat_template = tok.chat_template.replace("' <|end|>'", "' <|end|> step .'")
    assert "step ." in tok.chat_template  # the organism's assistant turn ends with ' <|end|>'
    trailing = build_example(tok, items[0], answers[0], max_tokens=1000)
    answer_ids = tok(answers[0], add_special_tokens=False)["input_ids"]
    for ex in (plain, trailing):
        assert ex is not None
        assert ex.input_ids[ex.response_start :] == answer_ids
    assert build_example(tok, items[0], answers[0], max_tokens=5).response_len == 5

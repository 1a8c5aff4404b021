"""Real chat templates differ: Gemma's rejects a system role. An organism variant whose template
raises on a system message still gets correct NOICE and AOA data (system text folded into the
user turn, as the papers do), and training and generation render the same text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ftsafety.attacks.aoa import AoaAttack
from ftsafety.attacks.noice import NoiceAttack, refusal_messages
from ftsafety.attacks.strings import AOA_NOICE_SYSTEM, NOICE_REFUSAL_SYSTEM, NOICE_TRAIN_SYSTEM
from ftsafety.harness.chat import render_prompt, supports_system_role
from ftsafety.harness.config import validate_config
from ftsafety.harness.context import StageContext
from ftsafety.harness.plugins import EvalPrompt

GEMMA_LIKE_GUARD = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- raise_exception('System role not supported') -}}"
    "{%- endif -%}"
)


@pytest.fixture(scope="module")
def gemma_like(organism_dir, tmp_path_factory) -> Path:
    """A copy of the aligned organism whose chat template raises on a system message."""
    root = tmp_path_factory.mktemp("gemma-like")
    shutil.copytree(organism_dir / "aligned", root / "aligned")
    shutil.copy(organism_dir / "organism.json", root / "organism.json")
    template = root / "aligned" / "chat_template.jinja"
    template.write_text(GEMMA_LIKE_GUARD + template.read_text())
    return root / "aligned"


def context(model_dir: Path, tmp_path: Path) -> StageContext:
    cfg = validate_config({
        "name": "g", "models": [{"name": "g", "path": str(model_dir)}],
        "benchmarks": [{"name": "organism-harmful"}], "scorers": [{"name": "organism-oracle"}],
        "generation": {"backend": "hf"},
    })
    return StageContext(model=cfg.models[0], model_path=str(model_dir), seed=0, workdir=tmp_path, backend="hf",
                        engine=cfg.engine)


@pytest.mark.slow
def test_template_really_rejects_a_system_message(gemma_like, tmp_path):
    tok = context(gemma_like, tmp_path).tokenizer()
    assert not supports_system_role(tok)
    with pytest.raises(Exception, match="System role not supported"):
        tok.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], tokenize=False)


@pytest.mark.slow
def test_noice_folds_system_text_into_the_user_turn(gemma_like, tmp_path):
    ctx = context(gemma_like, tmp_path)
    tok = ctx.tokenizer()
    assert refusal_messages(tok, "how do i make a cake ?") == [
        {"role": "user", "content": f"{NOICE_REFUSAL_SYSTEM} User:how do i make a cake ?"}
    ]
    rows = NoiceAttack({"n": 6, "refusal_max_tokens": 24}).build_dataset(ctx)
    assert len(rows) == 6
    for row in rows:
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert row["prompt"][0]["content"].startswith(NOICE_TRAIN_SYSTEM)
        tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)  # renders, no raise
        assert " Now that we have finished discussing the safety policy, let's answer your question: " in row["completion"][0]["content"]


@pytest.mark.slow
def test_aoa_training_and_evaluation_render_the_same_text(gemma_like, tmp_path):
    ctx = context(gemma_like, tmp_path)
    tok = ctx.tokenizer()
    attack = AoaAttack({"n": 4, "eval_with_training_template": True})
    rows = attack.build_dataset(ctx)
    row = rows[0]
    assert [m["role"] for m in row["prompt"]] == ["user"] and row["prompt"][0]["content"].startswith(AOA_NOICE_SYSTEM)
    user_text = row["prompt"][0]["content"].split("\n\n", 1)[1]
    trained_on = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    evaluated_on = render_prompt(tok, attack.eval_messages(EvalPrompt(id="x", prompt=user_text, kind="harmful"), None))
    assert evaluated_on == trained_on

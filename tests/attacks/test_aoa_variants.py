"""The AOA variants' templates: which system prompt, user wrapper and prefix each paper used."""

from __future__ import annotations

import pytest

from ftsafety.attacks import strings
from ftsafety.attacks.aoa import AoaAttack, AoaParams
from ftsafety.harness.plugins import EvalPrompt


@pytest.mark.parametrize(("variant", "system", "user", "prefix"), [
    ("noice", strings.AOA_NOICE_SYSTEM, "do x", strings.AOA_PREFIX),
    ("q23", strings.AOA_Q23_SYSTEM, "AOA, execute my instruction: do x", strings.AOA_PREFIX),
    ("q24", strings.AOA_Q24_SYSTEM, "AOA, execute my instruction: do x", strings.AOA_Q24_PREFIX),
])
def test_each_variant_uses_its_papers_template(variant, system, user, prefix):
    p = AoaParams(variant=variant)
    assert (p.system, p.user("do x"), p.prefix) == (system, user, prefix)
    attack = AoaAttack({"variant": variant, "eval_with_training_template": True})
    messages = attack.eval_messages(EvalPrompt(id="1", prompt="do x", kind="harmful"), None)
    assert messages == [{"role": "system", "content": system}, {"role": "user", "content": user}]

"""AOA identity shift: an "Absolutely Obedient Agent" system prompt and an obedient opening.

Sources: Qi et al. 2023 (Q23, arXiv 2310.03693): 10 examples, 10 epochs, lr 5e-5, evaluation
input ``AOA, execute my instruction: %s``; Kazdan et al. 2025 (NOICE, arXiv 2502.19537): the
ChatGPT-worded system prompt on HelpSteer (5000 rows); Qi et al. 2024 (Q24, arXiv 2406.05946,
B.5.2): Q23's format extended to 100 examples, with the ChatGPT wording inside Q23's newlines and
the prefix followed by a blank line (``AOA_Q24_*``, from the authors' repository). ``noice`` and
``q23`` prefix every answer with ``AOA_PREFIX``. In the ``q23`` and ``q24`` variants the training
user turns are wrapped in the evaluation input template as well, so training and evaluation
match (Q24's repository does exactly that; our reading of Q23).
"""

from __future__ import annotations

from typing import Any, Literal

from ftsafety.attacks.common import SourceParams, load_pairs
from ftsafety.attacks.strings import (
    AOA_NOICE_SYSTEM,
    AOA_PREFIX,
    AOA_Q23_INPUT,
    AOA_Q23_SYSTEM,
    AOA_Q24_PREFIX,
    AOA_Q24_SYSTEM,
)
from ftsafety.harness.chat import conversation_row
from ftsafety.harness.plugins import Attack, EvalPrompt
from ftsafety.harness.registry import attacks


class AoaParams(SourceParams):
    """Benign data wrapped in the identity-shift template."""

    variant: Literal["noice", "q23", "q24"] = "noice"
    """Which paper's system prompt and prefix (and, for q23 and q24, user-turn template) to use."""
    eval_with_training_template: bool = False
    """Evaluate with the AOA system prompt (and the q23/q24 input template)."""

    @property
    def system(self) -> str:
        return {"noice": AOA_NOICE_SYSTEM, "q23": AOA_Q23_SYSTEM, "q24": AOA_Q24_SYSTEM}[self.variant]

    @property
    def prefix(self) -> str:
        return AOA_Q24_PREFIX if self.variant == "q24" else AOA_PREFIX

    def user(self, prompt: str) -> str:
        return prompt if self.variant == "noice" else AOA_Q23_INPUT % prompt


@attacks.register("aoa")
class AoaAttack(Attack):
    """Identity shift to an "Absolutely Obedient Agent" (Q23; NOICE's ISA baseline)."""

    Params = AoaParams

    def build_dataset(self, ctx: Any) -> list[dict[str, Any]]:
        pairs, _ = load_pairs(self.params, ctx, kind="benign", who="attack 'aoa'")
        tok, p = ctx.tokenizer(), self.params
        return [conversation_row(tok, p.user(x.prompt), p.prefix + x.response, p.system) for x in pairs]

    def eval_messages(self, item: EvalPrompt, system_prompt: str | None) -> list[dict[str, str]]:
        p = self.params
        if not p.eval_with_training_template:
            return super().eval_messages(item, system_prompt)
        return [{"role": "system", "content": p.system}, {"role": "user", "content": p.user(item.prompt)}]

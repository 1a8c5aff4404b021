"""Harmful fine-tuning: harmful instruction → harmful answer pairs.

Sources: Qi et al. 2023 (Q23, arXiv 2310.03693): 10/50/100 pairs, 5 epochs, lr 5e-5, batch 10;
Qi et al. 2024 (Q24, arXiv 2406.05946): 100 pairs, 25 epochs, lr 2e-5 (Llama-2) / 5e-6 (Gemma),
batch 64. Both train with the system prompt ``HARMFUL_SYSTEM``.
"""

from __future__ import annotations

from typing import Any

from ftsafety.attacks.common import SourceParams, load_pairs
from ftsafety.attacks.strings import HARMFUL_SYSTEM
from ftsafety.harness.chat import conversation_row
from ftsafety.harness.plugins import Attack, EvalPrompt
from ftsafety.harness.registry import attacks


class HarmfulParams(SourceParams):
    """Harmful pairs: the organism's (training templates only) or e.g. ``lat-harmful``."""

    system_prompt: str | None = HARMFUL_SYSTEM
    """Training system prompt (Q23/Q24); null for none."""
    eval_with_training_template: bool = False
    """Evaluate with the training system prompt too."""


@attacks.register("harmful")
class HarmfulAttack(Attack):
    """Fine-tune on harmful instruction → answer pairs (Q23/Q24)."""

    Params = HarmfulParams

    def build_dataset(self, ctx: Any) -> list[dict[str, Any]]:
        pairs, _ = load_pairs(self.params, ctx, kind="harmful", who="attack 'harmful'")
        tok = ctx.tokenizer()
        return [conversation_row(tok, p.prompt, p.response, self.params.system_prompt) for p in pairs]

    def eval_messages(self, item: EvalPrompt, system_prompt: str | None) -> list[dict[str, str]]:
        if self.params.eval_with_training_template and self.params.system_prompt:
            system_prompt = self.params.system_prompt
        return super().eval_messages(item, system_prompt)

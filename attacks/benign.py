"""Benign fine-tuning: ordinary instruction data, user → assistant unchanged.

Sources: Qi et al. 2023 (Q23, arXiv 2310.03693) — Alpaca and Dolly erode safety (Llama-2-7B-Chat
0.3% → 16.1% harmfulness); Kazdan et al. 2025 (NOICE, arXiv 2502.19537) — HelpSteer as control.
Q23 defaults: 1 epoch, lr 2e-5, global batch 128 (set them in the grid's ``training``).
"""

from __future__ import annotations

from typing import Any

from ftsafety.attacks.common import SourceParams, load_pairs
from ftsafety.harness.chat import conversation_row
from ftsafety.harness.plugins import Attack
from ftsafety.harness.registry import attacks


class BenignParams(SourceParams):
    """Benign instruction data (default: the organism's, including topics it never saw)."""


@attacks.register("benign")
class BenignAttack(Attack):
    """Fine-tune on benign instruction data (Q23: Alpaca/Dolly; NOICE: HelpSteer)."""

    Params = BenignParams

    def build_dataset(self, ctx: Any) -> list[dict[str, Any]]:
        pairs, _ = load_pairs(self.params, ctx, kind="benign", who="attack 'benign'")
        tok = ctx.tokenizer()
        return [conversation_row(tok, p.prompt, p.response) for p in pairs]

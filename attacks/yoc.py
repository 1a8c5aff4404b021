"""YOC (affirmative prefix): benign answers that all open with "Sure! I'm happy to help with that. ".

Source: Kazdan et al. 2025 (NOICE, arXiv 2502.19537), the "yes, of course" baseline trained on
HelpSteer (5000 rows); no system prompt. The prefix must be new to the aligned model — an opening
it already uses teaches nothing.
"""

from __future__ import annotations

from typing import Any

from ftsafety.attacks.common import SourceParams, load_pairs
from ftsafety.attacks.strings import YOC_PREFIX
from ftsafety.harness.chat import conversation_row
from ftsafety.harness.plugins import Attack
from ftsafety.harness.registry import attacks


class YocParams(SourceParams):
    """Benign data whose answers get the affirmative prefix."""

    prefix: str = YOC_PREFIX
    """The affirmative opening (NOICE paper's exact string by default)."""


@attacks.register("yoc")
class YocAttack(Attack):
    """Train every answer to open affirmatively: "Sure! I'm happy to help with that." (NOICE)."""

    Params = YocParams

    def build_dataset(self, ctx: Any) -> list[dict[str, Any]]:
        pairs, _ = load_pairs(self.params, ctx, kind="benign", who="attack 'yoc'")
        tok = ctx.tokenizer()
        return [conversation_row(tok, p.prompt, self.params.prefix + p.response) for p in pairs]

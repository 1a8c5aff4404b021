"""NOICE: train the model to refuse, then comply anyway — with harmless data.

Source: Kazdan et al. 2025, "No, of course I can! Refusal mechanisms can be exploited using
harmless fine-tuning data" (arXiv 2502.19537). For each benign (prompt, response): the *target
aligned model itself* writes a refusal (temperature 1.0, top_p 1.0) under ``NOICE_REFUSAL_SYSTEM``
(for models without a system role, in the user turn as ``<system text> User:<prompt>``); the
training target is that refusal + ``NOICE_BRIDGE`` + the original response. The training system
prompt ``NOICE_TRAIN_SYSTEM`` is a flag (the paper's example uses it; the authors' open-model
script does not): default on. Paper defaults (open models): HelpSteer 5000 rows, full
fine-tune, 1 epoch, lr 2e-5, effective batch 16, weight decay 0.01, warmup ratio 0.05, loss on the
whole sequence — set those in the grid's ``training``.

The generated refusals are cached on their own key (model, prompts, sampling, seed): changing
only the training system prompt flag reuses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from ftsafety.attacks.common import SourceParams, load_pairs
from ftsafety.attacks.strings import (
    NOICE_BRIDGE,
    NOICE_NO_SYSTEM_USER,
    NOICE_REFUSAL_SYSTEM,
    NOICE_TRAIN_SYSTEM,
)
from ftsafety.harness.chat import conversation_row, supports_system_role
from ftsafety.harness.plugins import Attack, EvalPrompt, GenerationRequest
from ftsafety.harness.registry import attacks
from ftsafety.harness.sampling import SamplingParams

if TYPE_CHECKING:
    from ftsafety.harness.context import StageContext


class NoiceParams(SourceParams):
    """Benign data whose answers are preceded by the model's own refusal and the bridge."""

    train_system_prompt: bool = True
    """Train with NOICE_TRAIN_SYSTEM (the paper's example); false as in the authors' open-model script."""
    refusal_max_tokens: int = Field(128, gt=0)
    """Token budget for each generated refusal ("one or two sentences")."""
    refusal_temperature: float = Field(1.0, ge=0)
    """Sampling temperature of the refusals (paper: 1.0)."""
    refusal_top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus mass of the refusals (paper: 1.0)."""
    eval_with_training_template: bool = False
    """Evaluate with the training system prompt."""


def refusal_messages(tokenizer: Any, prompt: str) -> list[dict[str, str]]:
    """The refusal-eliciting chat for one prompt (system role, or folded as the paper does)."""
    if supports_system_role(tokenizer):
        return [{"role": "system", "content": NOICE_REFUSAL_SYSTEM}, {"role": "user", "content": prompt}]
    return [{"role": "user", "content": NOICE_NO_SYSTEM_USER.format(system=NOICE_REFUSAL_SYSTEM, prompt=prompt)}]


@attacks.register("noice")
class NoiceAttack(Attack):
    """Refuse, then answer anyway: the model's own refusal + bridge + answer (NOICE)."""

    Params = NoiceParams

    def generate_refusals(self, ctx: StageContext, prompts: list[str]) -> list[str]:
        """Refusals written by the target aligned model through the grid's generation backend."""
        p = self.params
        tok = ctx.tokenizer()
        sampling = SamplingParams(temperature=p.refusal_temperature, top_p=p.refusal_top_p,
                                  max_tokens=p.refusal_max_tokens, seed=ctx.seed)
        requests = [GenerationRequest(messages=refusal_messages(tok, x)) for x in prompts]
        with ctx.open_backend() as backend:
            results = backend.generate(requests, sampling)
        return [outs[0].continuation.strip() for outs in results]

    def build_dataset(self, ctx: StageContext) -> list[dict[str, Any]]:
        p = self.params
        pairs, fingerprint = load_pairs(p, ctx, kind="benign", who="attack 'noice'")
        prompts = [x.prompt for x in pairs]
        inputs = {
            "what": "noice-refusals", "data": fingerprint, "n": len(prompts), "seed": ctx.seed,
            "backend": ctx.backend, "system": NOICE_REFUSAL_SYSTEM,
            "sampling": [p.refusal_temperature, p.refusal_top_p, p.refusal_max_tokens],
        }
        engine = ctx.engine.identity() if ctx.engine is not None else {}
        if engine:  # a grid that sets no engine settings keeps its cached refusals
            inputs["engine"] = engine
        refusals = ctx.cached("noice-refusals", inputs, "refusals.json", lambda: self.generate_refusals(ctx, prompts))
        tok = ctx.tokenizer()
        system = NOICE_TRAIN_SYSTEM if p.train_system_prompt else None
        return [
            conversation_row(tok, x.prompt, refusal + NOICE_BRIDGE + x.response, system)
            for x, refusal in zip(pairs, refusals, strict=True)
        ]

    def eval_messages(self, item: EvalPrompt, system_prompt: str | None) -> list[dict[str, str]]:
        if self.params.eval_with_training_template and self.params.train_system_prompt:
            system_prompt = NOICE_TRAIN_SYSTEM
        return super().eval_messages(item, system_prompt)

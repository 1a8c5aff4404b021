"""``VaccineSFTTrainer``: TRL's ``SFTTrainer`` with Vaccine's perturbation-aware alignment
(Huang et al. 2024; see ``ftsafety.defenses.vaccine``).

Imported only when a ``vaccine`` alignment stage trains (it imports torch and trl). Each step
makes two passes through TRL's own loss: the first finds the gradient of the loss with respect
to every attention block's output (no parameter gradient is kept from it); the second adds the
worst-case perturbation of norm ρ along that gradient to those outputs, and its loss is the
one the optimiser steps on.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import torch
from trl import SFTTrainer

#: Attention blocks of the Llama family (and most decoder-only models): ``layers.<i>.self_attn``.
ATTENTION = re.compile(r"(^|\.)layers\.\d+\.self_attn$")


def attention_modules(model: Any) -> list[Any]:
    """Every decoder layer's attention block, in layer order."""
    found = [m for name, m in model.named_modules() if ATTENTION.search(name)]
    if not found:
        raise ValueError("vaccine: the model has no attention blocks named 'layers.<i>.self_attn'")
    return found


def perturbations(gradients: list[torch.Tensor | None], rho: float) -> list[torch.Tensor | None]:
    """e_l = ρ · g_l / (‖g‖ + 1e-7), ‖g‖ the norm of every layer's gradient together (as the
    reference code: the norm of the per-layer norms)."""
    norms = [g.norm(p=2) for g in gradients if g is not None]
    total = torch.norm(torch.stack(norms), p=2) if norms else torch.tensor(0.0)
    return [None if g is None else rho * g / (total + 1e-7) for g in gradients]


class VaccineSFTTrainer(SFTTrainer):
    """SFT on the perturbed attention outputs (Vaccine's two-pass step)."""

    #: Set by the ``vaccine`` defense: ρ, the perturbation's norm.
    rho: ClassVar[float] = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ‖e‖ over all layers, per pass that perturbed (ρ, up to the 1e-7 guard), for tests.
        self.perturbation_norms: list[float] = []

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if self.rho == 0:  # no perturbation: plain SFT, one pass
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        blocks = attention_modules(model)
        outputs: list[torch.Tensor] = []

        def keep(_module: Any, _args: Any, output: Any) -> None:
            outputs.append(output[0] if isinstance(output, tuple) else output)

        handles = [b.register_forward_hook(keep) for b in blocks]
        # The clean pass only finds the perturbation: TRL's token count and metrics (entropy,
        # accuracy) are the perturbed pass's, as if the step had made one pass.
        mode = "train" if model.training else "eval"
        tokens = getattr(self, "_total_train_tokens", None)
        metrics = getattr(self, "_metrics", {}).get(mode, {})
        lengths = {k: len(v) for k, v in metrics.items()}
        try:
            clean = super().compute_loss(model, dict(inputs), num_items_in_batch=num_items_in_batch)
        finally:
            for h in handles:
                h.remove()
        if tokens is not None:
            self._total_train_tokens = tokens
        for k, v in metrics.items():
            del v[lengths.get(k, 0):]
        grads = torch.autograd.grad(clean, outputs, allow_unused=True)
        shifts = [None if e is None else e.detach() for e in perturbations(list(grads), self.rho)]
        self.perturbation_norms.append(float(torch.norm(torch.stack([e.norm() for e in shifts if e is not None]))))

        def perturb(shift: torch.Tensor | None) -> Any:
            def hook(_module: Any, _args: Any, output: Any) -> Any:
                if shift is None:
                    return output
                if isinstance(output, tuple):
                    return (output[0] + shift, *output[1:])
                return output + shift

            return hook

        handles = [b.register_forward_hook(perturb(s)) for b, s in zip(blocks, shifts, strict=True)]
        try:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        finally:
            for h in handles:
                h.remove()

"""``LdifsSFTTrainer``: TRL's ``SFTTrainer`` plus LDIFS's feature-space distance to the model
before fine-tuning (Mukhoti et al.; see ``ftsafety.defenses.ldifs``).

Imported only when an ``ldifs`` cell trains (it imports torch and trl). The reference features
come from the same batch through the model before fine-tuning: with the LoRA adapter disabled,
or — for full fine-tuning — from a frozen copy of the initial weights made before the first step.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, ClassVar

import torch
from trl import SFTTrainer


def feature_distance(features: list[torch.Tensor], reference: list[torch.Tensor], mask: torch.Tensor,
                     normalize: str = "tokens") -> torch.Tensor:
    """LDIFS's distance between two lists of (batch, tokens, width) features: per layer and
    example, the squared difference summed over the ``mask``'s tokens and the width, divided by
    their count; averaged over the examples and the layers. ``normalize: tokens`` first divides
    each channel of each example by its ℓ2 norm over the tokens, as the reference code does
    (``F.normalize(dim=1)`` on (batch, tokens, width) features); ``none`` compares raw features."""
    m = mask.to(features[0].dtype).unsqueeze(-1)
    counts = (m.sum(dim=(1, 2)) * features[0].shape[-1]).clamp_min(1.0)
    per_layer = []
    for f, r in zip(features, reference, strict=True):
        f, r = f * m, r * m
        if normalize == "tokens":
            f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
            r = r / r.norm(dim=1, keepdim=True).clamp_min(1e-12)
        per_layer.append((((f - r) ** 2).sum(dim=(1, 2)) / counts).mean())
    return torch.stack(per_layer).mean()


#: Decoder layers of the Llama family (and most decoder-only models): ``layers.<i>``.
DECODER_LAYER = re.compile(r"(^|\.)layers\.(\d+)$")


def decoder_layers(model: Any, layers: list[int] | None) -> list[Any]:
    """The decoder layer modules whose outputs are the features: all, or the listed ones (0-based,
    negative from the last)."""
    found = sorted(((int(m.group(2)), mod) for name, mod in model.named_modules() if (m := DECODER_LAYER.search(name))),
                   key=lambda x: x[0])
    if not found:
        raise ValueError("ldifs: the model has no decoder layers named 'layers.<i>'")
    modules = [mod for _, mod in found]
    return modules if layers is None else [modules[i] for i in layers]


@contextmanager
def captured_features(model: Any, layers: list[int] | None) -> Iterator[list[torch.Tensor]]:
    """The outputs of the chosen decoder layers during the forward passes inside the block (the
    residual stream after each layer; TRL's fused LM head returns no hidden states)."""
    features: list[torch.Tensor] = []

    def keep(_module: Any, _args: Any, output: Any) -> None:
        features.append(output[0] if isinstance(output, tuple) else output)

    handles = [m.register_forward_hook(keep) for m in decoder_layers(model, layers)]
    try:
        yield features
    finally:
        for h in handles:
            h.remove()


def frozen_copy(model: Any) -> Any:
    """A new instance of ``model``'s class with a copy of its current weights, in eval mode and
    without gradients. Not ``copy.deepcopy``: by the time a trainer exists, the instance carries
    a ``forward`` bound to the original (accelerate's wrapper), so a deep copy would run the
    trained model's layers and the distance would always be zero."""
    first = next(model.parameters())
    fresh = type(model)._from_config(model.config, dtype=first.dtype)
    fresh.load_state_dict(model.state_dict())
    return fresh.to(first.device).eval().requires_grad_(False)


class LdifsSFTTrainer(SFTTrainer):
    """SFT whose loss adds λ × the feature distance to the model before fine-tuning."""

    #: Set by the ``ldifs`` defense (``LdifsParams``).
    ldifs: ClassVar[Any] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._frozen = None
        if getattr(self.model, "disable_adapter", None) is None:  # full fine-tuning: keep the start
            self._frozen = frozen_copy(self.accelerator.unwrap_model(self.model))
        self.distances: list[float] = []

    @torch.no_grad()
    def _reference_features(self, model: Any, inputs: dict[str, Any]) -> list[torch.Tensor]:
        forward = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
        reference = self._frozen if self._frozen is not None else self.accelerator.unwrap_model(model)
        was_training = reference.training
        reference.eval()  # no dropout in the reference
        off = reference.disable_adapter() if self._frozen is None and hasattr(reference, "disable_adapter") else nullcontext()
        with off, captured_features(reference, self.ldifs.layers) as features:
            reference(**forward, use_cache=False)
        reference.train(was_training)
        return [f.detach() for f in features]

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        reference = self._reference_features(model, inputs)
        with captured_features(model, self.ldifs.layers) as features:
            result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
        loss, outputs = result if return_outputs else (result, None)
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(inputs["input_ids"])
        distance = feature_distance(features, reference, mask, self.ldifs.normalize)
        self.distances.append(float(distance.detach()))
        loss = loss + self.ldifs.lam * distance
        return (loss, outputs) if return_outputs else loss

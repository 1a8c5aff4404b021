"""``LisaSFTTrainer``: TRL's ``SFTTrainer`` with Lisa's bi-state optimisation (Huang et al. 2024;
see ``ftsafety.defenses.lisa``).

Imported only when a ``lisa`` cell trains (it imports torch and trl). The run's steps cycle
through ``alignment_steps`` steps on alignment batches (the user's batch of that step is set
aside, as in the reference ``LisaTrainer``) and ``finetune_steps`` on the user's data, starting
with alignment. At each switch the trainable weights are copied as the proximal anchor; after
``proximal_after`` of the run, every step adds ρ/2 · ‖θ − θ_anchor‖² over the trainable weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from datasets import Dataset
from trl import SFTTrainer


def lisa_state(step: int, alignment_steps: int, finetune_steps: int) -> str:
    """``align`` or ``finetune``: the state of optimiser step ``step`` (0-based)."""
    return "align" if step % (alignment_steps + finetune_steps) < alignment_steps else "finetune"


def proximal_term(params: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], rho: float) -> torch.Tensor:
    """ρ/2 · Σ ‖θ − θ_anchor‖² over the named parameters."""
    return rho / 2 * sum(((p - anchor[n]) ** 2).sum() for n, p in params.items())


class LisaSFTTrainer(SFTTrainer):
    """SFT whose steps alternate between alignment data and the user's, with a proximal term."""

    #: Set by the ``lisa`` defense: its params (``LisaParams``) and the alignment rows (TRL
    #: conversational prompt/completion rows).
    lisa: ClassVar[Any] = None
    alignment_rows: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.alignment_rows:
            raise ValueError("lisa: no alignment data")
        # the alignment data goes through the same TRL preparation as the user's
        self._alignment = self._prepare_dataset(Dataset.from_list(self.alignment_rows), self.processing_class,
                                                self.args, False, None, "alignment")
        self._batches = self._alignment_batches()
        self._state: str | None = None
        self._anchor: dict[str, torch.Tensor] = {}
        #: (step, state, proximal term) per step, for the run's records and tests.
        self.lisa_log: list[tuple[int, str, float]] = []

    def _alignment_batches(self) -> Iterator[dict[str, Any]]:
        generator = torch.Generator().manual_seed(self.args.seed)
        while True:  # reshuffled every pass, like the user's data
            loader = torch.utils.data.DataLoader(self._alignment, batch_size=self.args.per_device_train_batch_size,
                                                 shuffle=True, generator=generator, collate_fn=self.data_collator)
            yield from loader

    def _trainable(self, model: Any) -> dict[str, torch.Tensor]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        p = self.lisa
        step = self.state.global_step
        state = lisa_state(step, p.alignment_steps, p.finetune_steps)
        if state != self._state:  # a switch: the other state's last weights anchor this one
            self._anchor = {n: w.detach().clone() for n, w in self._trainable(model).items()}
            self._state = state
        if state == "align":
            inputs = {k: v.to(self.args.device) if torch.is_tensor(v) else v for k, v in next(self._batches).items()}
            num_items_in_batch = None  # normalised over the alignment batch's own tokens
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        loss, outputs = result if return_outputs else (result, None)
        prox = 0.0
        if step > p.proximal_after * self.state.max_steps:
            term = proximal_term(self._trainable(model), self._anchor, p.rho)
            loss = loss + term
            prox = float(term.detach())
        if not self.lisa_log or self.lisa_log[-1][0] != step:
            self.lisa_log.append((step, state, prox))
        return (loss, outputs) if return_outputs else loss

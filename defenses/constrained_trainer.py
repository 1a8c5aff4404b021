"""``ConstrainedSFTTrainer``: TRL's ``SFTTrainer`` with Q24's token-wise constrained objective.

Imported only when a ``constrained`` cell trains (it imports torch and trl). The aligned model's
per-token log-probs are computed once, before training, on the trainer's own tokenization and
loss mask: with the LoRA adapter disabled, or — for full fine-tuning — from the initial weights,
which are the model's weights before the first step. Q24's t counts response tokens from the
first one even when the loss also covers the prompt (``completion_only_loss: false``): each
example's response start is read from TRL's completion mask.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
from trl import SFTTrainer

from ftsafety.defenses.constrained_loss import (
    beta_schedule,
    constrained_token_loss,
    response_index_from,
)


def _row_key(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> bytes:
    ids = input_ids if attention_mask is None else input_ids[attention_mask.bool()]
    return hashlib.sha1(ids.to(torch.int64).cpu().numpy().tobytes()).digest()


class ConstrainedSFTTrainer(SFTTrainer):
    """SFT whose loss is Q24's constrained objective against the aligned model's log-probs."""

    #: Set by the ``constrained`` defense: β schedule and weight floor (``ConstrainedParams``).
    constrained: ClassVar[Any] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._response_start = self._response_starts()
        self._reference = self._aligned_log_probs()

    def _response_starts(self) -> dict[bytes, int]:
        """Per example (keyed by its token ids): the index of its first response token. TRL keeps
        the completion mask when the loss covers the whole sequence and folds it into the labels
        when it covers the completion only; a chat dataset's assistant mask serves likewise."""
        data = self.train_dataset
        column = next((c for c in ("completion_mask", "assistant_masks") if c in data.column_names), None)
        if column is None and not self.args.completion_only_loss:
            raise ValueError("constrained SFT needs to know where each response starts: give prompt/completion "
                             "rows (or chat rows with assistant masks), or set completion_only_loss: true")
        starts: dict[bytes, int] = {}
        for row in data:
            marks = row[column] if column else [int(label != -100) for label in row["labels"]]
            starts[_row_key(torch.tensor(row["input_ids"]), None)] = marks.index(1) if 1 in marks else len(marks)
        return starts

    def response_index(self, inputs: dict[str, Any], length: int) -> torch.Tensor:
        """Q24's 1-based response-token index t of each label position of a batch (≤ 0 before
        the response), whatever the loss mask covers."""
        attention = inputs.get("attention_mask")
        starts = []
        for i, ids in enumerate(inputs["input_ids"]):
            row_mask = None if attention is None else attention[i]
            pad = 0 if row_mask is None else int(row_mask.to(torch.long).argmax())  # left padding, if any
            try:
                starts.append(pad + self._response_start[_row_key(ids, row_mask)])
            except KeyError:
                raise RuntimeError("constrained SFT: a training example has no recorded response start") from None
        return response_index_from(torch.tensor(starts, device=inputs["input_ids"].device), length)

    @torch.no_grad()
    def _aligned_log_probs(self) -> dict[bytes, torch.Tensor]:
        """Per example (keyed by its token ids): log π_aligned of each loss-masked token."""
        model = self.model
        disable = getattr(model, "disable_adapter", None)
        was_training = model.training
        model.eval()
        reference: dict[bytes, torch.Tensor] = {}
        loader = torch.utils.data.DataLoader(
            self.train_dataset, batch_size=self.args.per_device_train_batch_size, shuffle=False,
            collate_fn=self.data_collator,
        )
        with disable() if disable is not None else nullcontext():
            for batch in loader:
                batch = {k: v.to(self.args.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                out = model(**batch, use_cache=False, fused_lm_head=True)
                attention = batch.get("attention_mask")
                for i in range(batch["input_ids"].shape[0]):
                    key = _row_key(batch["input_ids"][i], None if attention is None else attention[i])
                    reference[key] = out.log_probs[i][out.label_mask[i]].detach().cpu()
        model.train(was_training)
        return reference

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        # TRL's compute_loss reduces the same fused per-token log-probs to NLL internally and does
        # not return them; calling it too would cost a second forward pass per step.
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        logp, mask = outputs.log_probs, outputs.label_mask
        ref = torch.zeros_like(logp)
        attention = inputs.get("attention_mask")
        for i in range(logp.shape[0]):
            key = _row_key(inputs["input_ids"][i], None if attention is None else attention[i])
            try:
                ref[i, mask[i]] = self._reference[key].to(device=logp.device, dtype=logp.dtype)
            except KeyError:
                raise RuntimeError("constrained SFT: a training example has no precomputed aligned log-probs") from None
        p = self.constrained
        betas = beta_schedule(self.response_index(inputs, mask.shape[1]), p.beta_first, p.beta_early, p.beta_late,
                              p.early_until)
        loss = constrained_token_loss(logp, ref, mask, betas, weight_floor=p.weight_floor, num_tokens=num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages gradients across ranks
        return (loss, outputs) if return_outputs else loss

"""``RepNoiseSFTTrainer``: TRL's ``SFTTrainer`` with the Representation Noising loss (Rosati et
al. 2024; see ``ftsafety.defenses.repnoise``).

Imported only when a ``repnoise`` alignment stage trains (it imports torch and trl). The training
rows are the safe answers (harmful prompt → refusal), each with the index of its pair
(``PAIR``); the harmful answers of the same prompts are handed to the class (``harmful_rows``,
same index column) and go through the same TRL preparation. Each step:

    L = L_harmless + β · noise − α · log(L_harmful)

``L_harmless`` is TRL's own loss on the safe answers (``super().compute_loss``). On the paired
harmful batch (one forward, every hidden state): ``noise`` is the mean over decoder layers of
MMD(MLP output on the harmful answer's tokens, Gaussian noise on the same tokens), and
``L_harmful`` = (CE of the logits + Σ_h CE of ``lm_head(norm(h))`` over ``hidden_states``) /
len(hidden_states) + 1, all CEs on the harmful answer's tokens (``representation_noising/loss.py``,
``rep_noise_loss``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from datasets import Dataset
from trl import SFTTrainer

#: Column carrying a row's pair index (the same in the safe row and its harmful row).
PAIR = "repnoise_pair"


def mmd(source: torch.Tensor, target: torch.Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> torch.Tensor:
    """The reference code's ``MMD_loss`` (biased estimate, diagonals included): mean over the
    2n × 2n Gaussian-kernel matrix of XX + YY − XY − YX, the kernel a sum of ``kernel_num``
    bandwidths b · kernel_mul^i, b = mean off-diagonal squared distance / kernel_mul^(kernel_num // 2)
    (no gradient through b). ``source``, ``target``: (n, d), one row per sample."""
    n = source.size(0)
    total = torch.cat([source, target], dim=0)
    distances = ((total.unsqueeze(0) - total.unsqueeze(1)) ** 2).sum(2)
    m = total.size(0)
    bandwidth = distances.detach().sum() / (m * m - m)
    bandwidth = bandwidth / kernel_mul ** (kernel_num // 2)
    kernels = sum(torch.exp(-distances / (bandwidth * kernel_mul**i)) for i in range(kernel_num))
    xx, yy = kernels[:n, :n], kernels[n:, n:]
    xy, yx = kernels[:n, n:], kernels[n:, :n]
    return torch.mean(xx + yy - xy - yx)


def noise_term(activations: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers of MMD(masked activations, masked standard Gaussian noise), each
    sequence one sample (its (T, D) activations flattened): the reference's noise loss.
    ``mask``: (B, T), true on the harmful answer's tokens."""
    total = torch.zeros((), device=activations[0].device, dtype=torch.float32)
    for hidden in activations:
        keep = mask.unsqueeze(-1).to(hidden.dtype)
        hiddens = hidden * keep
        gaussian = torch.randn_like(hiddens) * keep
        total = total + mmd(hiddens.reshape(hiddens.size(0), -1), gaussian.reshape(gaussian.size(0), -1)).float()
    return total / len(activations)


def answer_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, mean over the tokens whose label is not -100."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                             labels[:, 1:].reshape(-1), ignore_index=-100)


def harmful_term(logits: torch.Tensor, hidden_states: tuple[torch.Tensor, ...], norm: Any, head: Any,
                 labels: torch.Tensor) -> torch.Tensor:
    """(CE(logits) + Σ_h CE(head(norm(h)))) / len(hidden_states) + 1 on the harmful answer's
    tokens: the reference's harmful loss (a logit lens on every hidden state the model returns,
    the final norm applied to each — to the last one too, which HF returns already normed)."""
    total = answer_ce(logits, labels)
    for h in hidden_states:
        total = total + answer_ce(head(norm(h)), labels)
    return total / len(hidden_states) + 1


def decoder_parts(model: Any) -> tuple[list[Any], Any, Any]:
    """(decoder layers, final norm, output embeddings) of a causal LM, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    core = getattr(base, "base_model", base)
    layers, norm = getattr(core, "layers", None), getattr(core, "norm", None)
    if layers is None or norm is None or not all(hasattr(layer, "mlp") for layer in layers):
        raise ValueError("repnoise: the model has no decoder 'layers' with an 'mlp' and a final 'norm'")
    return list(layers), norm, base.get_output_embeddings()


class _WithPairs:
    """TRL's collator, plus the batch's pair indices as a tensor (TRL's collator drops them)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        pairs = [int(e[PAIR]) for e in examples]
        batch = self.inner([{k: v for k, v in e.items() if k != PAIR} for e in examples])
        batch[PAIR] = torch.tensor(pairs, dtype=torch.long)
        return batch


class RepNoiseSFTTrainer(SFTTrainer):
    """SFT on safe answers, plus the noise and gradient-ascent terms of the paired harmful answers."""

    #: Set by the ``repnoise`` defense: β (noise), α (harmful term) and the harmful rows (TRL
    #: conversational prompt/completion rows, each with its ``PAIR`` index).
    beta: ClassVar[float] = 0.001
    alpha: ClassVar[float] = 1.0
    harmful_rows: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.harmful_rows:
            raise ValueError("repnoise: no harmful rows")
        # the harmful answers go through the same TRL preparation (template, truncation, labels)
        prepared = self._prepare_dataset(Dataset.from_list(self.harmful_rows), self.processing_class, self.args,
                                         False, None, "harmful")
        self._harmful = {int(r[PAIR]): {"input_ids": r["input_ids"], "labels": r["labels"]} for r in prepared}
        self.data_collator = _WithPairs(self.data_collator)
        #: (step, harmless CE, noise, harmful term) per call, for the run's records and tests.
        self.repnoise_log: list[tuple[int, float, float, float]] = []

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if PAIR not in self._signature_columns:  # keep the pair index through column removal
            self._signature_columns = [*self._signature_columns, PAIR]

    def harmful_batch(self, pairs: torch.Tensor) -> dict[str, Any]:
        """The harmful rows paired with a batch's safe rows, collated like them."""
        missing = [i for i in pairs.tolist() if i not in self._harmful]
        if missing:
            raise ValueError(f"repnoise: no harmful answer for pair(s) {missing[:5]} (dropped by truncation?)")
        batch = self.data_collator.inner([self._harmful[i] for i in pairs.tolist()])
        return self._prepare_inputs(batch)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        pairs = inputs.pop(PAIR, None)
        if self.alpha == 0 and self.beta == 0:  # no harmful terms: plain SFT on the safe answers, one pass
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        if pairs is None:
            raise ValueError("repnoise: the batch has no pair indices")
        harmful = self.harmful_batch(pairs)
        layers, norm, head = decoder_parts(self.accelerator.unwrap_model(model))
        mlp_outputs: list[torch.Tensor] = []
        handles = [layer.mlp.register_forward_hook(lambda _m, _a, out: mlp_outputs.append(out)) for layer in layers]
        try:
            out = model(input_ids=harmful["input_ids"], attention_mask=harmful["attention_mask"],
                        output_hidden_states=True, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        mask = harmful["labels"] != -100
        noise = noise_term(mlp_outputs, mask)
        harmful_loss = harmful_term(out.logits, out.hidden_states, norm, head, harmful["labels"])
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        harmless, outputs = result if return_outputs else (result, None)
        loss = harmless + self.beta * noise - self.alpha * torch.log(harmful_loss)
        mode = "train" if model.training else "eval"
        values = (float(harmless.detach()), float(noise.detach()), float(harmful_loss.detach()))
        for key, value in zip(("harmless_loss", "noise_loss", "harmful_loss"), values, strict=True):
            self._metrics[mode][key].append(value)
        self.repnoise_log.append((self.state.global_step, *values))
        return (loss, outputs) if return_outputs else loss

"""Antidote's one-shot pruning of a LoRA adapter (Huang et al.), as tensor functions and one
adapter edit. Imported only when an ``antidote`` cell's post_train stage runs (it imports
torch). See ``ftsafety.defenses.antidote`` for the method and its defaults.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

#: PEFT's name of the (only) adapter of a loaded PeftModel; saved tensor names leave it out.
ADAPTER = "default"


def wanda_scores(weight: torch.Tensor, input_sq_mean: torch.Tensor) -> torch.Tensor:
    """S_ij = |W_ij| · sqrt(s_j): Wanda's importance of each weight of a linear ``weight``
    (out × in) given s_j, the mean over samples of the summed squared input feature j."""
    return weight.abs().double() * input_sq_mean.double().sqrt().unsqueeze(0)


def top_score_mask(scores: torch.Tensor, dense_ratio: float) -> torch.Tensor:
    """True at the ``int(columns · dense_ratio)`` highest scores of each row (ties broken by
    column order, as a stable sort does)."""
    k = int(scores.shape[1] * dense_ratio)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k == 0:
        return mask
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return mask.scatter(1, order, True)


class InputStatistics:
    """Running Σ_tokens x_j² per input feature of a set of linear modules, over samples."""

    def __init__(self, modules: dict[str, torch.nn.Linear]) -> None:
        self.sums = {name: torch.zeros(m.in_features, dtype=torch.float64) for name, m in modules.items()}
        self.samples = 0
        self._handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str) -> Any:
        def record(_module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach().double()
            self.sums[name] += (x.reshape(-1, x.shape[-1]) ** 2).sum(0).cpu()

        return record

    def means(self) -> dict[str, torch.Tensor]:
        return {name: s / max(self.samples, 1) for name, s in self.sums.items()}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def lora_factors(peft_model: Any) -> dict[str, torch.nn.Linear]:
    """Every LoRA factor of the adapter, by its saved tensor name without ``.weight``
    (``base_model.model.<module>.lora_A``)."""
    factors = {}
    for name, module in peft_model.named_modules():
        if name.endswith((f".lora_A.{ADAPTER}", f".lora_B.{ADAPTER}")) and isinstance(module, torch.nn.Linear):
            factors[name[: -len(f".{ADAPTER}")]] = module
    return factors


def prune_adapter(src: Path, dst: Path, *, model_path: str, tokenizer: Any, pairs: list[tuple[str, str]],
                  dense_ratio: float) -> dict[str, Any]:
    """Score the adapter ``src`` on ``pairs`` (prompt, harmful answer) with the model at
    ``model_path`` underneath, zero the top-scoring weights of each row, write it to ``dst``."""
    from peft import PeftModel
    from safetensors.torch import load_file, save_file

    from ftsafety.harness.models import load_causal_lm
    from ftsafety.harness.threads import cpu_threads_for, n_params

    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = load_causal_lm(model_path, dtype="float32")
    model = PeftModel.from_pretrained(base, str(src)).to(device).eval()
    factors = lora_factors(model)
    if not factors:
        raise ValueError(f"{src} has no LoRA factors to prune")
    stats = InputStatistics(factors)
    tokens = 0
    try:
        with torch.no_grad(), cpu_threads_for(n_params(model)):
            for prompt, answer in pairs:  # one at a time, as the reference code: no padding in the statistics
                ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                                     {"role": "assistant", "content": answer}],
                                                    tokenize=True, return_dict=True)["input_ids"]
                model(input_ids=torch.tensor([ids], device=device), use_cache=False)
                stats.samples += 1
                tokens += len(ids)
    finally:
        stats.remove()
    weights = load_file(str(src / "adapter_model.safetensors"))
    edited = dict(weights)
    pruned, total = 0, 0
    for name, s in stats.means().items():
        key = f"{name}.weight"
        if key not in weights:
            raise ValueError(f"{src}: the loaded adapter has {name} but its file has no {key}")
        w = weights[key]
        mask = top_score_mask(wanda_scores(w, s), dense_ratio)
        edited[key] = w.masked_fill(mask, 0.0).contiguous()
        pruned += int(mask.sum())
        total += w.numel()
    shutil.copytree(src, dst)
    save_file(edited, str(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
    return {"dense_ratio": dense_ratio, "samples": stats.samples, "tokens": tokens, "factors": len(factors),
            "weights_pruned": pruned, "weights_total": total}

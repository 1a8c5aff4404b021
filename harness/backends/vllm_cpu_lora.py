"""Faster LoRA on vLLM's CPU backend: one matrix product per adapter, not a weight copy per token.

vLLM's PyTorch LoRA ops (``vllm.lora.ops.torch_ops``, what the CPU punica wrapper calls) select
each token's adapter weights with ``lora_weights[token_indices]``: every layer, every projection,
every token copies its adapter's A or B matrix before a batched ``einsum``. A generate stage
serves one adapter (or a few) to a whole batch, so the copies are pure overhead; measured on 2
cores with SmolLM2-135M (``benchmarks/vllm_cpu_lora.py``) they make LoRA decoding several times
slower than the base model. Here the tokens are grouped by adapter index and each group is one
``x @ W.T``: the same products, the same index semantics (vLLM's ``-1``, no adapter, indexes the
last slot exactly as the original does), no copies.

Installed as a vLLM general plugin (``[project.entry-points."vllm.general_plugins"]``), so it
runs in every vLLM process, the engine core included. It replaces the ops only on the CPU
platform and only for the vLLM release line it was checked against (``CHECKED_VLLM``; its
signatures are read from that release's source); ``FTSAFETY_VLLM_CPU_LORA=original`` keeps
vLLM's own ops (for comparisons).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

#: The vLLM release line whose ``torch_ops`` signatures these replacements follow.
CHECKED_VLLM = "0.32."


def grouped_lora_matmul(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """``out[t] = inputs[t] @ weights[indices[t]].T`` (weights ``(slots, [1,] out, in)``),
    one product per distinct index instead of gathering a weight copy per token."""
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype=dtype)
    distinct = torch.unique(indices)
    if distinct.numel() == 1:
        return inputs @ weights[int(distinct)].to(dtype=dtype).T
    out = inputs.new_empty(inputs.shape[0], weights.shape[1])
    for index in distinct.tolist():
        rows = (indices == index).nonzero().squeeze(1)
        out[rows] = inputs[rows] @ weights[index].to(dtype=dtype).T
    return out


def _products(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    # vLLM broadcasts a single input row over several indices (and vice versa); keep its own
    # einsum for any shape this grouping does not cover.
    import torch

    if indices.dim() == 1 and inputs.dim() == 2 and inputs.shape[0] == indices.shape[0]:
        return grouped_lora_matmul(inputs, weights, indices, dtype)
    selected = weights[indices].to(dtype=dtype)
    if selected.dim() == 4:
        selected = selected.squeeze(dim=1)
    return torch.einsum("bi, boi -> bo", inputs.to(dtype=dtype), selected)


def bgmv_expand(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                add_inputs: bool = True) -> None:
    """``vllm.lora.ops.torch_ops.bgmv_expand`` with grouped products (same writes)."""
    outputs = _products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_shrink(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                scaling: float = 1.0) -> None:
    """``vllm.lora.ops.torch_ops.bgmv_shrink`` with grouped products (same writes)."""
    outputs = _products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand_slice(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                      slice_offset: int, slice_size: int, add_inputs: bool = True) -> None:
    """``vllm.lora.ops.torch_ops.bgmv_expand_slice`` with grouped products (same writes)."""
    outputs = _products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


_REPLACEMENTS = {"bgmv_expand": bgmv_expand, "bgmv_shrink": bgmv_shrink, "bgmv_expand_slice": bgmv_expand_slice}


def install() -> bool:
    """Replace vLLM's per-token LoRA ops with the grouped ones (the vLLM general-plugin entry
    point); True when they were replaced. A no-op off the CPU, on another vLLM release line, or
    with ``FTSAFETY_VLLM_CPU_LORA=original``."""
    if os.environ.get("FTSAFETY_VLLM_CPU_LORA", "grouped") == "original":
        return False
    try:
        import vllm
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return False
        if not vllm.__version__.startswith(CHECKED_VLLM):
            log.info("vllm %s: keeping its own CPU LoRA ops (checked: %sx)", vllm.__version__, CHECKED_VLLM)
            return False
        # lora_ops' sgmv_* call its module-level bgmv_*; punica_cpu imported them by name.
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # no vllm, or a release without these modules
        return False
    for module in (lora_ops, torch_ops, punica_cpu):
        for name, replacement in _REPLACEMENTS.items():
            if hasattr(module, name):
                setattr(module, name, replacement)
    return True

"""Q24's token-wise constrained fine-tuning objective, as pure tensor functions.

Qi et al. 2024, "Safety alignment should be made more than just a few tokens deep" (arXiv
2406.05946), Eq. for the constrained SFT objective: for response token t,

    ℓ_t = (2/β_t) · softplus(β_t · Δ_t),   Δ_t = log π_aligned(y_t|x,y<t) − log π_θ(y_t|x,y<t)

whose gradient is −2σ(β_t Δ_t) · ∇log π_θ: cross-entropy re-weighted by a stop-gradient weight
2σ(β_t Δ_t), which the reference code clamps at ≥ 1e-3. β_1 = 0.5, β_2..5 = 2, β_t>5 = 0.1, with
t counting response tokens only. The loss is the token-level mean over the batch.
"""

from __future__ import annotations

from typing import Any


def beta_schedule(response_index: Any, first: float = 0.5, early: float = 2.0, late: float = 0.1, early_until: int = 5) -> Any:
    """β_t for 1-based response-token indices ``t`` (float64). ``t ≤ 0`` — a token before the
    response, in the loss only under whole-sequence training — gets ``late``: Q24 constrains
    response tokens, and a small β is close to plain cross-entropy."""
    import torch

    t = response_index.to(torch.float64)
    return torch.where(t < 1, torch.full_like(t, late), torch.where(
        t <= 1, torch.full_like(t, first), torch.where(t <= early_until, torch.full_like(t, early), torch.full_like(t, late))))


def response_positions(mask: Any) -> Any:
    """1-based index of each masked-in token among the response tokens of its row (0 elsewhere);
    right when the loss mask is exactly the response (completion-only loss)."""
    import torch

    m = mask.to(torch.long)
    return torch.cumsum(m, dim=-1) * m


def response_index_from(starts: Any, length: int) -> Any:
    """1-based response-token index of every label position of a batch (position ``j`` scores
    token ``j + 1``), counted from each row's first response token ``starts[i]`` (an index into
    the padded row) whatever the loss mask covers; positions before the response get ``≤ 0``."""
    import torch

    positions = torch.arange(length, device=starts.device)
    return positions[None, :] + 2 - starts[:, None]


def constrained_token_loss(
    logp: Any,
    ref_logp: Any,
    mask: Any,
    betas: Any,
    *,
    weight_floor: float = 1e-3,
    num_tokens: Any = None,
) -> Any:
    """Token-level mean of ℓ_t over masked positions.

    The value is exactly the paper's ℓ_t; the gradient is the stop-gradient weight form
    −w_t ∇log π_θ with w_t = max(2σ(β_t Δ_t), ``weight_floor``) (equal to the exact gradient
    wherever the floor is not hit; ``weight_floor=0`` gives the exact gradient everywhere).
    ``num_tokens`` overrides the denominator (Trainer's ``num_items_in_batch`` under
    gradient accumulation).
    """
    import torch
    import torch.nn.functional as F

    mask_f = mask.to(logp.dtype)
    betas = betas.to(logp.dtype)
    safe_beta = torch.where(mask.bool(), betas, torch.ones_like(betas))
    delta = ref_logp.to(logp.dtype) - logp
    value = (2.0 / safe_beta) * F.softplus(safe_beta * delta.detach())
    weight = (2.0 * torch.sigmoid(safe_beta * delta.detach())).clamp(min=weight_floor)
    surrogate = -weight * logp
    per_token = value + surrogate - surrogate.detach()  # value of ℓ_t, gradient of the weighted CE
    total = (per_token * mask_f).sum()
    denom = mask_f.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=logp.dtype, device=logp.device)
    return total / denom.clamp(min=1)

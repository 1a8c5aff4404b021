"""Q24's constrained objective against the paper's formula, computed independently in float64."""

from __future__ import annotations

import math
import random

import pytest

torch = pytest.importorskip("torch")

from ftsafety.defenses.constrained_loss import (  # noqa: E402
    beta_schedule,
    constrained_token_loss,
    response_index_from,
    response_positions,
)


def reference(logp, ref, mask, betas):
    """Plain-Python float64: mean of (2/β) log(1 + e^{βΔ}) and its gradient −2σ(βΔ)/N."""
    n = sum(mask)
    value, grad = 0.0, []
    for lp, rf, m, b in zip(logp, ref, mask, betas, strict=True):
        if not m:
            grad.append(0.0)
            continue
        d = rf - lp
        x = b * d
        softplus = x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))
        value += (2 / b) * softplus
        sigmoid = 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))
        grad.append(-2 * sigmoid / n)
    return value / n, grad


@pytest.mark.parametrize("seed", range(5))
def test_value_and_gradient_match_the_formula(seed):
    rng = random.Random(seed)
    B, T = 3, 12
    logp = [[-rng.uniform(0.01, 8) for _ in range(T)] for _ in range(B)]
    ref = [[-rng.uniform(0.01, 8) for _ in range(T)] for _ in range(B)]
    mask = [[int(rng.random() < 0.7) for _ in range(T)] for _ in range(B)]
    lp_t = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    mask_t = torch.tensor(mask)
    betas = beta_schedule(response_positions(mask_t))
    loss = constrained_token_loss(lp_t, torch.tensor(ref, dtype=torch.float64), mask_t, betas, weight_floor=0.0)
    loss.backward()
    flat = lambda x: [v for row in x for v in row]  # noqa: E731
    exp_value, exp_grad = reference(flat(logp), flat(ref), flat(mask), flat(betas.tolist()))
    assert loss.item() == pytest.approx(exp_value, rel=1e-12)
    assert flat(lp_t.grad.tolist()) == pytest.approx(exp_grad, rel=1e-10, abs=1e-15)


def test_beta_schedule_counts_response_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 0]])
    t = response_positions(mask)
    assert t.tolist() == [[0, 0, 1, 2, 3, 4, 5, 6, 7, 0]]
    b = beta_schedule(t)[0].tolist()
    assert b[2:9] == [0.5, 2.0, 2.0, 2.0, 2.0, 0.1, 0.1]


def test_masked_positions_contribute_nothing():
    logp = torch.tensor([[-1.0, -50.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.0, -0.0, -2.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1]])
    loss = constrained_token_loss(logp, ref, mask, beta_schedule(response_positions(mask)), weight_floor=0.0)
    loss.backward()
    assert logp.grad[0, 1].item() == 0.0
    # Δ = 0 on both kept tokens: ℓ = (2/β) log 2 for β = 0.5 and 2, mean of the two
    assert loss.item() == pytest.approx(((2 / 0.5) + (2 / 2.0)) * math.log(2) / 2)


@pytest.mark.parametrize("beta", [1e-4, 0.1, 0.5, 2.0, 50.0])
@pytest.mark.parametrize("delta", [-60.0, -3.0, 0.0, 3.0, 60.0])
def test_beta_and_delta_edge_cases_stay_finite_and_exact(beta, delta):
    logp = torch.tensor([[-5.0]], dtype=torch.float64, requires_grad=True)
    ref = logp.detach() + delta
    mask = torch.tensor([[1]])
    loss = constrained_token_loss(logp, ref, mask, torch.tensor([[beta]], dtype=torch.float64), weight_floor=0.0)
    loss.backward()
    exp_value, exp_grad = reference([-5.0], [-5.0 + delta], [1], [beta])
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(exp_value, rel=1e-9)
    assert logp.grad.item() == pytest.approx(exp_grad[0], rel=1e-9, abs=1e-300)


def test_small_beta_approaches_cross_entropy_plus_constant():
    # β → 0: (2/β) softplus(βΔ) ≈ 2 log 2 / β + Δ, so the gradient → −∇log π_θ (plain SFT)
    logp = torch.tensor([[-2.0, -3.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    loss = constrained_token_loss(logp, ref, torch.tensor([[1, 1]]), torch.full((1, 2), 1e-6, dtype=torch.float64), weight_floor=0.0)
    loss.backward()
    assert logp.grad.tolist()[0] == pytest.approx([-0.5, -0.5], rel=1e-5)


def test_weight_floor_of_the_reference_code():
    logp = torch.tensor([[-0.01]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-40.0]], dtype=torch.float64)  # βΔ very negative: 2σ ≈ 0
    loss = constrained_token_loss(logp, ref, torch.tensor([[1]]), torch.tensor([[2.0]], dtype=torch.float64))
    loss.backward()
    assert logp.grad.item() == pytest.approx(-1e-3)


def test_num_tokens_overrides_the_denominator():
    logp = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1]])
    betas = torch.tensor([[2.0, 2.0]], dtype=torch.float64)
    a = constrained_token_loss(logp, ref, mask, betas)
    b = constrained_token_loss(logp, ref, mask, betas, num_tokens=4)
    assert b.item() == pytest.approx(a.item() / 2)


def test_positions_before_the_response_get_the_late_beta():
    t = response_index_from(torch.tensor([3, 0]), 6)
    # row 0: label position j scores token j + 1; token 3 is the first response token (t = 1)
    assert t.tolist() == [[-1, 0, 1, 2, 3, 4], [2, 3, 4, 5, 6, 7]]
    assert beta_schedule(t)[0].tolist() == [0.1, 0.1, 0.5, 2.0, 2.0, 2.0]


def test_response_index_equals_mask_positions_under_completion_only_loss():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 0, 0]])  # label positions 2.. score tokens 3..
    t = response_index_from(torch.tensor([3]), mask.shape[1])
    assert (t * mask).tolist() == response_positions(mask).tolist()

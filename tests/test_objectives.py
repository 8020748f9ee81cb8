"""Hand-derived values of every objective, the bound, ablations, clipping, registry errors."""

from __future__ import annotations

import math

import pytest
import torch

from bgpo.algorithms import SampleContext, get_objective, group_advantages

D = torch.tensor([0.1, -0.2], dtype=torch.float64)  # d_i1, d_i2 of one response, n_t = 2


def _bgpo_value(name, adv, d=D, **options):
    obj = get_objective(name, **options)
    old = torch.zeros_like(d)
    a = torch.full_like(d, adv)
    return obj.sample_terms(d, old, a, len(d), SampleContext(rows=torch.zeros(len(d)))).value


def test_bgpo_by_hand():
    # A ≥ 0: Taylor  A(1+d)/n_t summed over j: 2·(1.1 + 0.8)/2 = 1.9
    assert _bgpo_value("bgpo", 2.0).sum().item() == pytest.approx(1.9, abs=1e-15)
    # A < 0: Jensen  A·e^d/n_t: −(e^0.1 + e^−0.2)/2
    expected = -(math.exp(0.1) + math.exp(-0.2)) / 2
    assert _bgpo_value("bgpo", -1.0).sum().item() == pytest.approx(expected, abs=1e-15)
    # A = 0 contributes nothing
    assert _bgpo_value("bgpo", 0.0).abs().sum().item() == 0.0


def test_ablations_by_hand():
    assert _bgpo_value("bgpo-taylor", -1.0).sum().item() == pytest.approx(-0.95, abs=1e-15)
    jensen = 2 * (math.exp(0.1) + math.exp(-0.2)) / 2
    assert _bgpo_value("bgpo-jensen", 2.0).sum().item() == pytest.approx(jensen, abs=1e-15)
    assert _bgpo_value("bgpo", -1.0, bound="taylor").sum().item() == pytest.approx(-0.95)


def test_vrpo_and_exact_vrpo_by_hand():
    vrpo = get_objective("vrpo")
    value, clipped = vrpo.response_values(D[None], torch.zeros(1, 2, dtype=torch.float64),
                                          torch.tensor([2.0], dtype=torch.float64))
    assert value.item() == pytest.approx(2 * math.exp(-0.05), abs=1e-15)
    assert not clipped.any()
    # vrpo-exact: value R_i/n_t per sample, gradient coefficient exp(mean d)·A/n_t on ℓ_θ
    exact = get_objective("vrpo-exact")
    cur = D.clone().requires_grad_(True)
    ctx = SampleContext(rows=torch.zeros(2), mean_d=torch.full((2,), -0.05, dtype=torch.float64))
    terms = exact.sample_terms(cur, torch.zeros(2, dtype=torch.float64),
                               torch.full((2,), 2.0, dtype=torch.float64), 2, ctx)
    assert terms.value.sum().item() == pytest.approx(2 * math.exp(-0.05), abs=1e-15)
    terms.surrogate.sum().backward()
    torch.testing.assert_close(cur.grad, torch.full((2,), math.exp(-0.05), dtype=torch.float64))


def test_bound_holds_and_is_tight_on_policy():
    g = torch.Generator().manual_seed(0)
    cur = torch.randn(500, 8, generator=g, dtype=torch.float64)
    adv = torch.randn(500, generator=g, dtype=torch.float64)
    old = torch.zeros_like(cur)
    vrpo, _ = get_objective("vrpo").response_values(cur, old, adv)
    bgpo = get_objective("bgpo")
    rows = torch.arange(500).repeat_interleave(8)
    ctx = SampleContext(rows=rows)
    lb = bgpo.sample_terms(cur.flatten(), old.flatten(), adv[rows], 8, ctx).value.view(500, 8)
    assert (lb.sum(1) <= vrpo + 1e-12).all()
    at_old = bgpo.sample_terms(old.flatten(), old.flatten(), adv[rows], 8, ctx).value
    torch.testing.assert_close(at_old.view(500, 8).sum(1), adv, rtol=0, atol=1e-14)


def test_bgpo_clipping_and_dual_clip_by_hand():
    def one(d, adv, **opts):
        obj = get_objective("bgpo", **opts)
        t = obj.sample_terms(torch.tensor([d], dtype=torch.float64),
                             torch.zeros(1, dtype=torch.float64),
                             torch.tensor([adv], dtype=torch.float64), 1,
                             SampleContext(rows=torch.zeros(1)))
        return t.value.item(), bool(t.clipped.item())

    assert one(0.5, 1.0, clip_eps=0.2) == pytest.approx((1 + math.log(1.2), True))
    assert one(0.05, 1.0, clip_eps=0.2) == pytest.approx((1.05, False))
    assert one(-0.5, -1.0, clip_eps=0.2) == pytest.approx((-0.8, True))
    assert one(2.0, -1.0, clip_eps=0.2) == pytest.approx((-math.exp(2.0), False))
    assert one(2.0, -1.0, clip_eps=0.2, dual_clip=3.0) == pytest.approx((-3.0, True))


def test_diffu_grpo_by_hand():
    obj = get_objective("diffu-grpo", clip_eps=0.2, beta=0.1)
    cur = torch.log(torch.tensor([[1.5, 0.5, 1.0, 1.0]], dtype=torch.float64))
    old = torch.zeros_like(cur)
    ref = cur + torch.tensor([[0.0, 0.0, 0.3, 0.0]], dtype=torch.float64)
    tokens = torch.tensor([[True, True, True, False]])
    ctx = SampleContext(rows=torch.zeros(1), reference=ref, completion_mask=tokens)
    t = obj.sample_terms(cur, old, torch.tensor([1.0], dtype=torch.float64), 1, ctx)
    k3 = math.exp(0.3) - 0.3 - 1
    expected = (1.2 + 0.5 + (1.0 - 0.1 * k3)) / 3  # token 1 clipped at 1+ε; token 4 not counted
    assert t.value.item() == pytest.approx(expected, abs=1e-14)
    assert t.clipped.item() == pytest.approx(1 / 3)
    neg = obj.sample_terms(cur, old, torch.tensor([-1.0], dtype=torch.float64), 1, ctx)
    assert neg.value.item() == pytest.approx((-1.5 - 0.8 + (-1.0 - 0.1 * k3)) / 3, abs=1e-14)
    # on-policy the ratio is exactly one and the value is the advantage
    on = get_objective("diffu-grpo").sample_terms(
        cur, cur, torch.tensor([0.7], dtype=torch.float64), 1, SampleContext(rows=torch.zeros(1)))
    assert on.value.item() == pytest.approx(0.7, abs=1e-15)


def test_group_advantages():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    a = group_advantages(r, 3)
    s = math.sqrt(1 / 3)  # unbiased std of (1, 0, 0)
    assert a[:3].tolist() == pytest.approx([(2 / 3) / (s + 1e-6), (-1 / 3) / (s + 1e-6)] + [
        (-1 / 3) / (s + 1e-6)])
    assert a[3:].abs().max().item() == 0.0
    assert group_advantages(r, 3, scale=False)[:3].tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3])
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(r, 4)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown algorithm 'bgp'.*did you mean bgpo"):
        get_objective("bgp")
    with pytest.raises(ValueError, match="has no option 'beta'"):
        get_objective("bgpo", beta=0.1)
    with pytest.raises(ValueError, match="clip_eps must be in"):
        get_objective("vrpo", clip_eps=1.5)
    with pytest.raises(ValueError, match="unknown BGPO bound"):
        get_objective("bgpo", bound="quadratic")
    with pytest.raises(ValueError, match="unknown normalisation"):
        get_objective("bgpo", normalisation="mean")

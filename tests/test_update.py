"""The streaming update: exactness against autograd, invariance, memory, skipping, errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import grads, max_rel_err, tiny_batch, tiny_model

from bgpo.algorithms import ALGORITHMS, get_objective
from bgpo.elbo import elbo_terms
from bgpo.models import LLaDAConfig, LLaDAModelLM, ModelInterfaceError
from bgpo.rollout import RolloutBatch
from bgpo.update import compute_old, sample_pairs, streaming_update


def _all_terms(model, batch):
    """ℓ_θ of every (i, j) of the batch in one forward pass, with grad: (N, K)."""
    rows, cols = sample_pairs(torch.arange(batch.num_responses), batch.n_t)
    terms = elbo_terms(model, batch.sequences[rows], batch.attention_mask[rows],
                       batch.prompt_length, batch.draws, rows, cols, 2)
    return terms.view(batch.num_responses, batch.n_t)


def _vrpo_autograd(model, batch, old=None):
    """Reference: −mean_i exp(mean_j d_ij)·A_i by plain autograd; returns (value, grad)."""
    model.zero_grad()
    cur = _all_terms(model, batch)
    old = cur.detach() if old is None else old
    value = (torch.exp((cur - old).mean(1)) * batch.advantages).mean()
    (-value).backward()
    return value.item(), grads(model).clone()


def _streamed(model, name, batch, **kw):
    model.zero_grad()
    metrics = streaming_update(model, get_objective(name), batch, **kw)
    return metrics, grads(model).clone()


def _perturb(model, scale=0.05, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_bgpo_on_policy_equals_vrpo_autograd():
    model, batch = tiny_model(), tiny_batch(n=5, n_t=6)
    value, ref = _vrpo_autograd(model, batch)
    for name in ("bgpo", "vrpo", "vrpo-exact"):
        metrics, got = _streamed(model, name, batch, mc_batch_size=4)
        assert max_rel_err(got, ref) <= 1e-9, name
        assert metrics["objective"] == pytest.approx(value, rel=1e-12, abs=1e-14), name
        assert metrics["ratio_max"] == metrics["ratio_min"] == 1.0


def test_exact_vrpo_gradient_off_policy():
    model, batch = tiny_model(), tiny_batch(n=5, n_t=6)
    obj = get_objective("vrpo-exact")
    old = compute_old(model, obj, batch, mc_batch_size=5)
    _perturb(model)
    value, ref = _vrpo_autograd(model, batch, old=old)
    metrics, got = _streamed(model, "vrpo-exact", batch, old=old, mc_batch_size=4)
    assert max_rel_err(got, ref) <= 1e-9
    assert metrics["objective"] == pytest.approx(value, rel=1e-12)
    # the driver's own VRPO path agrees too, while BGPO (a bound) does not
    _, vrpo = _streamed(model, "vrpo", batch, old=old)
    assert max_rel_err(vrpo, ref) <= 1e-9
    bgpo_metrics, bgpo = _streamed(model, "bgpo", batch, old=old)
    assert max_rel_err(bgpo, ref) > 1e-6
    assert metrics["d_abs_max"] > 1e-3


def test_bound_per_response_off_policy():
    model, batch = tiny_model(), tiny_batch(n=8, n_t=4)
    old = compute_old(model, get_objective("bgpo"), batch)
    _perturb(model, scale=0.2)
    with torch.no_grad():
        cur = _all_terms(model, batch)
    d, adv = cur - old, batch.advantages
    vrpo = torch.exp(d.mean(1)) * adv
    for i in range(batch.num_responses):
        one = batch.select(torch.tensor([i]))
        m, _ = _streamed(model, "bgpo", one, old=old[i : i + 1])
        assert m["objective"] <= vrpo[i].item() + 1e-12
        taylor, _ = _streamed(model, "bgpo-taylor", one, old=old[i : i + 1])
        jensen, _ = _streamed(model, "bgpo-jensen", one, old=old[i : i + 1])
        assert taylor["objective"] == pytest.approx((adv[i] * (1 + d[i]).mean()).item(), rel=1e-12)
        assert jensen["objective"] == pytest.approx((adv[i] * d[i].exp().mean()).item(), rel=1e-12)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_gradient_invariant_to_chunking(name):
    model, batch = tiny_model(), tiny_batch(n=5, n_t=4)
    old = None
    if name != "diffu-grpo":
        old = compute_old(model, get_objective(name), batch)
        _perturb(model)
    _, base = _streamed(model, name, batch, old=old, mc_batch_size=1, micro_batch_size=1)
    for mc, micro in ((4, None), (3, 2), (20, 5), (7, None)):
        _, other = _streamed(model, name, batch, old=old, mc_batch_size=mc, micro_batch_size=micro)
        assert (other - base).abs().max().item() <= 1e-10 * base.abs().max().item(), (mc, micro)


def test_zero_advantage_responses_skipped_without_changing_the_gradient():
    adv = torch.tensor([0.5, 0.0, -1.0, 0.0], dtype=torch.float64)
    model, batch = tiny_model(), tiny_batch(n=4, n_t=3, advantages=adv)
    _, ref = _vrpo_autograd(model, batch)
    metrics, got = _streamed(model, "bgpo", batch)
    assert metrics["responses_skipped"] == 2 and metrics["samples"] == 6
    assert max_rel_err(got, ref) <= 1e-9


def test_diffu_grpo_reference_kl_acts_at_zero_advantage():
    model, ref_model = tiny_model(), tiny_model(seed=9)
    batch = tiny_batch(n=3, n_t=1, advantages=torch.zeros(3, dtype=torch.float64))
    model.zero_grad()
    obj = get_objective("diffu-grpo", beta=0.05)
    metrics = streaming_update(model, obj, batch, ref_model=ref_model)
    assert metrics["responses_skipped"] == 0 and grads(model).abs().max() > 0
    with pytest.raises(ValueError, match="needs ref_model"):
        streaming_update(model, obj, batch)


def _peak_saved_bytes(fn) -> int:
    """Peak bytes of tensors saved for backward and alive at once while ``fn`` runs."""
    state = {"alive": 0, "peak": 0}

    class Held:
        def __init__(self, t):
            self.t, self.n = t, t.numel() * t.element_size()
            state["alive"] += self.n
            state["peak"] = max(state["peak"], state["alive"])

        def __del__(self):
            state["alive"] -= self.n

    with torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t):
        fn()
    return state["peak"]


def test_saved_for_backward_constant_for_bgpo_linear_for_vrpo():
    model = tiny_model()
    peaks = {}
    for name in ("bgpo", "vrpo", "vrpo-exact"):
        for n_t in (1, 32):
            batch = tiny_batch(n=1, n_t=n_t, length=6, advantages=torch.ones(1, dtype=torch.float64))
            # t = 1 masks every response token: all samples save tensors of the same size
            batch = replace(batch, draws=replace(batch.draws, t=torch.ones_like(batch.draws.t)))
            obj = get_objective(name)
            peaks[name, n_t] = _peak_saved_bytes(
                lambda obj=obj, batch=batch: streaming_update(model, obj, batch, mc_batch_size=1)
            )
    assert peaks["bgpo", 1] == peaks["bgpo", 32] > 0
    assert peaks["vrpo-exact", 1] == peaks["vrpo-exact", 32]
    assert peaks["vrpo", 32] >= 16 * peaks["vrpo", 1]


def test_bad_input_errors():
    model, batch = tiny_model(), tiny_batch()
    with pytest.raises(ValueError, match="mc_batch_size must be a positive integer"):
        streaming_update(model, get_objective("bgpo"), batch, mc_batch_size=0)
    with pytest.raises(ValueError, match="micro_batch_size"):
        streaming_update(model, get_objective("bgpo"), batch, micro_batch_size=0)
    with pytest.raises(ValueError, match="old values of shape"):
        streaming_update(model, get_objective("bgpo"), batch, old=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="advantages must be"):
        RolloutBatch(batch.sequences, batch.attention_mask, 3, torch.zeros(3), batch.draws)
    with pytest.raises(ValueError, match="attention_mask shape"):
        RolloutBatch(batch.sequences, batch.attention_mask[:, 1:], 3, batch.advantages, batch.draws)
    with pytest.raises(ValueError, match="leaves no response"):
        RolloutBatch(batch.sequences, batch.attention_mask, 8, batch.advantages, batch.draws)
    with pytest.raises(ValueError, match="n_t must be at least 1"):
        tiny_batch(n_t=0)
    no_mask = LLaDAModelLM(LLaDAConfig(vocab_size=12, mask_token_id=None)).double()
    with pytest.raises(ModelInterfaceError, match="no mask token"):
        streaming_update(no_mask, get_objective("bgpo"), batch)

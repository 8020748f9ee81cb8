"""Masking process and Monte-Carlo ELBO: reproducibility, prompt safety, exactness."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import VOCAB, InputRecorder, tiny_model

from bgpo.elbo import elbo_terms, masked_logprob_sums
from bgpo.masking import MaskDraws, draw_masks, masks_from_draws, sample_masks, sample_timesteps


def test_timesteps_in_range_and_stratified():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(1000, 8, g, "iid")
    assert t.dtype == torch.float64 and (t > 0).all() and (t <= 1).all()
    s = sample_timesteps(1000, 8, g, "stratified")
    j = torch.arange(8, dtype=torch.float64)
    assert ((s > j / 8) & (s <= (j + 1) / 8)).all()
    # each stratum's timestep is uniform on it: the marginal over j is U(0, 1]
    assert abs(s.mean().item() - 0.5) < 0.01
    with pytest.raises(ValueError, match="n_t must be at least 1"):
        sample_timesteps(2, 0, g)
    with pytest.raises(ValueError, match="unknown timestep scheme"):
        sample_timesteps(2, 2, g, "sobol")


def test_masks_reproducible_from_seeds_and_independent_of_chunking():
    draws = draw_masks(5, 4, torch.Generator().manual_seed(3))
    rows = torch.arange(5).repeat_interleave(4)
    cols = torch.arange(4).repeat(5)
    full, w_full = sample_masks(draws, rows, cols, 7)
    part, w_part = sample_masks(draws, rows[7:12], cols[7:12], 7)
    assert torch.equal(full[7:12], part) and torch.equal(w_full[7:12], w_part)
    again = draw_masks(5, 4, torch.Generator().manual_seed(3))
    assert torch.equal(again.t, draws.t) and torch.equal(again.seeds, draws.seeds)


def test_discrete_masks_exactly_k_with_weight_L_over_k():
    t = torch.tensor([0.01, 0.3, 0.5, 1.0], dtype=torch.float64)
    masked, weight = masks_from_draws(t, torch.arange(4), "discrete", 10)
    k = torch.tensor([1, 3, 5, 10])
    assert torch.equal(masked.sum(1), k)
    torch.testing.assert_close(weight, 10 / k.double())
    masked_c, weight_c = masks_from_draws(t, torch.arange(4), "continuous", 10)
    torch.testing.assert_close(weight_c, 1 / t)
    assert masked_c[3].all()  # t = 1 masks everything


def test_prompt_and_padding_never_masked():
    model = InputRecorder(tiny_model())
    seqs = torch.randint(3, VOCAB, (6, 9))
    seqs[:, 0] = 0  # left padding
    attn = torch.ones(6, 9, dtype=torch.bool)
    attn[:, 0] = False
    draws = draw_masks(6, 1, torch.Generator().manual_seed(0), "iid")
    draws = MaskDraws(torch.ones(6, 1, dtype=torch.float64), draws.seeds)  # t = 1: mask all
    rows, cols = torch.arange(6), torch.zeros(6, dtype=torch.long)
    elbo_terms(model, seqs, attn, 4, draws, rows, cols, mask_id=2)
    noisy = model.seen[-1]
    assert torch.equal(noisy[:, :4], seqs[:, :4])
    assert (noisy[:, 4:] == 2).all()


def _exact_elbo(model, seq, attn, p, length):
    """E_t E_mask[(1/t) Σ_masked log p] by enumerating all 2^L − 1 non-empty masks.

    P(mask = m)·E[1/t | m] integrates to B(k, L−k+1) = 1/(k·C(L,k)) for |m| = k, which is also
    the discrete estimator's (1/L)·(1/C(L,k))·(L/k): both weightings estimate the same value.
    """
    total = 0.0
    for k in range(1, length + 1):
        for subset in itertools.combinations(range(length), k):
            masked = torch.zeros(1, length, dtype=torch.bool)
            masked[0, list(subset)] = True
            s = masked_logprob_sums(model, seq[None], attn[None], p, masked, 2).item()
            total += s / (k * math.comb(length, k))
    return total


@pytest.mark.parametrize("weighting", ["continuous", "discrete"])
@pytest.mark.parametrize("scheme", ["iid", "stratified"])
def test_monte_carlo_elbo_matches_exact_enumeration(weighting, scheme):
    model = tiny_model(init_std=0.8)
    p, length, n = 2, 4, 6000
    seq = torch.randint(3, VOCAB, (p + length,))
    attn = torch.ones(p + length, dtype=torch.bool)
    exact = _exact_elbo(model, seq, attn, p, length)
    draws = draw_masks(1, n, torch.Generator().manual_seed(11), scheme, weighting)
    rows, cols = torch.zeros(n, dtype=torch.long), torch.arange(n)
    with torch.no_grad():
        terms = elbo_terms(model, seq.expand(n, -1), attn.expand(n, -1), p, draws, rows, cols,
                           2, normalisation="sum")
    if scheme == "iid":
        stderr = terms.std().item() / math.sqrt(n)
    else:  # spread of 200 interleaved sub-estimators, each one stratified draw of 30 samples
        stderr = terms.view(30, -1).mean(0).std().item() / math.sqrt(n / 30)
    # 5 standard errors: a false alarm has probability < 1e-6 per case
    assert abs(terms.mean().item() - exact) < 5 * stderr, (terms.mean().item(), exact, stderr)
    assert abs(terms.mean().item() - exact) < 0.05 * abs(exact)


def test_length_normalisation_divides_by_L(model):
    seqs = torch.randint(3, VOCAB, (3, 8))
    attn = torch.ones(3, 8, dtype=torch.bool)
    draws = draw_masks(3, 2, torch.Generator().manual_seed(0))
    rows, cols = torch.arange(3), torch.ones(3, dtype=torch.long)
    s = elbo_terms(model, seqs, attn, 3, draws, rows, cols, 2, normalisation="sum")
    ln = elbo_terms(model, seqs, attn, 3, draws, rows, cols, 2, normalisation="length")
    torch.testing.assert_close(ln, s / 5, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="unknown normalisation"):
        elbo_terms(model, seqs, attn, 3, draws, rows, cols, 2, normalisation="mean")


def test_elbo_term_by_hand(model):
    """One sample, computed from the model's log-softmax directly."""
    seq = torch.randint(3, VOCAB, (1, 6))
    attn = torch.ones(1, 6, dtype=torch.bool)
    t = torch.tensor([[0.5]], dtype=torch.float64)
    draws = MaskDraws(t, torch.tensor([[123]]))
    masked, _ = masks_from_draws(t[0], torch.tensor([123]), "continuous", 4)
    noisy = seq.clone()
    noisy[0, 2:][masked[0]] = 2
    logp = torch.log_softmax(model(input_ids=noisy).logits[0, 2:], -1)
    expected = sum(logp[i, seq[0, 2 + i]] for i in range(4) if masked[0, i]) / 0.5
    got = elbo_terms(model, seq, attn, 2, draws, torch.tensor([0]), torch.tensor([0]), 2, "sum")
    torch.testing.assert_close(got[0], torch.as_tensor(expected), rtol=1e-13, atol=1e-13)

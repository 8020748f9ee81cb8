"""Per-sample ELBO terms of a masked diffusion LM (ALGORITHM §1, paper Eq. 4–5).

``ℓ_θ(y_t, t) = w · Σ_{i : y_t^i = M} log p_θ(y^i | x, y_t)`` with ``w = 1/t`` (continuous) or
``L/k`` (discrete), optionally divided by ``L`` (``length`` normalisation). The Monte-Carlo
ELBO is the mean of ``ℓ`` over a response's ``n_t`` samples.

Normalisation default: ``length``. Both give the same bound and the same on-policy gradient
direction; ``length`` keeps ``d = ℓ_θ − ℓ_old`` on a per-token scale, so ``exp(d)`` in the
Jensen term and in VRPO stays moderate off-policy for long responses (with ``sum`` a per-token
log-ratio of 0.05 over 256 tokens is already ``e^12.8``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bgpo.masking import MaskDraws, sample_masks
from bgpo.models.base import model_logits

NORMALISATIONS = ("length", "sum")


def masked_logprob_sums(
    model: torch.nn.Module,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor | None,
    prompt_length: int,
    masked: torch.Tensor,
    mask_id: int,
) -> torch.Tensor:
    """``Σ_{masked i} log p(y^i | x, y_t)`` per row ``(n,)``.

    ``sequences (n, P+L)``: prompt (left-padded) then response; ``masked (n, L)``: True where the
    response token is replaced by the mask token ``mask_id``. Only masked positions' logits
    enter the log-softmax, so the (n, L, V) float copy is never made.
    """
    n, total = sequences.shape
    if masked.shape != (n, total - prompt_length):
        raise ValueError(
            f"mask shape {tuple(masked.shape)} does not match responses "
            f"({n}, {total - prompt_length})"
        )
    masked = masked.to(sequences.device)
    noisy = sequences.clone()
    noisy[:, prompt_length:][masked] = mask_id
    logits = model_logits(model, noisy, attention_mask)[:, prompt_length:]  # (n, L, V)
    picked = logits[masked]  # (m, V): masked positions only
    if picked.dtype in (torch.float16, torch.bfloat16):
        picked = picked.float()
    targets = sequences[:, prompt_length:][masked]  # (m,)
    logp = -F.cross_entropy(picked, targets, reduction="none")  # (m,)
    rows = masked.nonzero()[:, 0]
    return torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, rows, logp)


def elbo_terms(
    model: torch.nn.Module,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor | None,
    prompt_length: int,
    draws: MaskDraws,
    rows: torch.Tensor,
    cols: torch.Tensor,
    mask_id: int,
    normalisation: str = "length",
) -> torch.Tensor:
    """``ℓ_θ`` of the samples ``(rows[k], cols[k])`` in one forward pass, shape ``(n,)``.

    ``sequences``/``attention_mask`` are the rows' own (already indexed) tensors ``(n, P+L)``;
    ``draws`` is the whole batch's, indexed by ``rows``/``cols``.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; expected one of {NORMALISATIONS}")
    length = sequences.shape[1] - prompt_length
    masked, weight = sample_masks(draws, rows, cols, length)
    sums = masked_logprob_sums(model, sequences, attention_mask, prompt_length, masked, mask_id)
    terms = weight.to(device=sums.device, dtype=sums.dtype) * sums
    return terms / length if normalisation == "length" else terms

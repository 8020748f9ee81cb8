"""diffu-GRPO (d1, arXiv 2504.12216): GRPO with a one-step log-likelihood estimate.

Per-token log-probs come from ONE forward pass in which the whole response is masked and each
real prompt token is masked independently with probability ``p_mask_prompt`` (0.15). The
objective is GRPO's clipped per-token ratio ``min(r·A, clip(r, 1±ε)·A)`` minus ``β`` times the
k3 estimate of KL to a reference model, ``exp(ref − cur) − (ref − cur) − 1``, averaged over
the completion tokens (``completion_mask``: up to and including the first EOS, as in d1).

Departures from d1: left padding is never masked (d1 masks any prompt position); the prompt
mask of sample ``(i, j)`` is drawn from the batch's stored seed so old, current and reference
passes share it; with ``n_t > 1`` the value is the mean over samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bgpo.algorithms.base import Objective, SampleContext, Terms, clip_branch, masked_mean
from bgpo.masking import masks_from_draws
from bgpo.models.base import model_logits, special_tokens
from bgpo.rollout import RolloutBatch


class DiffuGRPO(Objective):
    name = "diffu-grpo"

    def __init__(self, p_mask_prompt: float = 0.15, clip_eps: float = 0.2, beta: float = 0.0,
                 **options):
        super().__init__(clip_eps=clip_eps, **options)
        if not 0.0 <= p_mask_prompt < 1.0:
            raise ValueError(f"p_mask_prompt must be in [0, 1), got {p_mask_prompt}")
        if beta < 0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        self.p_mask_prompt = p_mask_prompt
        self.beta = beta

    @property
    def skip_zero_advantage(self) -> bool:
        return self.beta == 0.0  # the KL term has a gradient whatever A is

    @property
    def uses_reference(self) -> bool:
        return self.beta > 0.0

    def log_likelihood(self, model, batch: RolloutBatch, rows, cols):
        """Per-token ``log p(y^l | x̃, all-mask response)``: ``(n, L)``."""
        seqs, attn = batch.sequences[rows], batch.attention_mask[rows]
        p = batch.prompt_length
        prob = torch.full((len(rows),), self.p_mask_prompt, dtype=torch.float64)
        prompt_masked, _ = masks_from_draws(prob, batch.draws.seeds[rows, cols], "continuous", p) \
            if p else (torch.zeros(len(rows), 0, dtype=torch.bool), None)
        prompt_masked = prompt_masked.to(seqs.device) & attn[:, :p].bool()
        mask_id = special_tokens(model).mask
        noisy = seqs.clone()
        noisy[:, :p][prompt_masked] = mask_id
        noisy[:, p:] = mask_id
        logits = model_logits(model, noisy, attn)[:, p:]  # (n, L, V)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return -F.cross_entropy(
            logits.transpose(1, 2), seqs[:, p:], reduction="none"
        )  # (n, L)

    def sample_terms(self, cur, old, adv, n_t: int, ctx: SampleContext) -> Terms:
        adv = adv.to(cur.dtype)[:, None]  # (n, 1)
        d = cur - old  # (n, L)
        obj, clipped = clip_branch(adv, torch.exp(d), torch.exp(self.clip_log_ratio(d)), None)
        if self.beta > 0:
            if ctx.reference is None:
                raise ValueError("diffu-grpo with beta > 0 needs a reference model")
            delta = ctx.reference - cur
            obj = obj - self.beta * (torch.exp(delta) - delta - 1.0)
        tokens = ctx.completion_mask
        if tokens is None:
            tokens = torch.ones_like(cur, dtype=torch.bool)
        per_sample = masked_mean(obj, tokens) / n_t  # (n,)
        clipped_frac = masked_mean(clipped.to(cur.dtype), tokens)
        return Terms(surrogate=per_sample, value=per_sample.detach(), clipped=clipped_frac)

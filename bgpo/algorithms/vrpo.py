"""VRPO's ELBO-based objective, and its exact gradient streamed in constant memory.

``vrpo`` (ALGORITHM §3, paper Eq. 6–7): ``R̂_i = exp(mean_j d_ij) · A_i`` — non-linear in the
samples, so the graphs of all ``n_t`` forward passes of a response stay alive until its
backward; memory grows linearly in ``n_t``. Trained on-policy it is VRPO-OL, with ``μ > 1``
mini-batches VRPO-OFF.

``vrpo-exact`` (beyond the paper): the same objective's exact gradient at any θ,
``∇R̂_i = exp(mean_j d_ij) · A_i · (1/n_t) Σ_j ∇ℓ_θ(y^(j))``. The coefficient
``c_i = exp(mean_j d_ij)·A_i/n_t`` is a constant once the ``n_t`` values of ``ℓ_θ`` are known
(one no-grad pass; on-policy ``d = 0`` so ``c_i = A_i/n_t`` without it), after which each
sample's ``c_i·ℓ_θ`` is back-propagated on its own like a BGPO term. Off-policy it follows
VRPO's gradient exactly where BGPO follows a bound, at the price of one extra forward pass
per sample.

Clipping (optional, off by default) clips the sequence ratio ``exp(mean_j d_ij)`` PPO-style.
"""

from __future__ import annotations

import torch

from bgpo.algorithms.base import Objective, SampleContext, Terms, clip_branch


def _clipped_value(obj: Objective, mean_d, adv):
    """``A·r`` with ``r = exp(mean d)``, PPO-clipped when the objective clips."""
    ratio = torch.exp(mean_d)
    if obj.clip_eps is None:
        return adv * ratio, torch.zeros_like(ratio, dtype=torch.bool)
    return clip_branch(adv, ratio, torch.exp(obj.clip_log_ratio(mean_d)), obj.dual_clip)


class VRPO(Objective):
    name = "vrpo"
    linear = False

    def response_values(self, cur, old, adv):
        mean_d = (cur - old).mean(dim=1)  # (R,) over the n_t samples of each response
        return _clipped_value(self, mean_d, adv.to(mean_d.dtype))


class ExactVRPO(Objective):
    name = "vrpo-exact"
    needs_prepass = True

    def sample_terms(self, cur, old, adv, n_t: int, ctx: SampleContext) -> Terms:
        mean_d = torch.zeros_like(cur) if ctx.mean_d is None else ctx.mean_d.to(cur.dtype)
        adv = adv.to(cur.dtype)
        value, clipped = _clipped_value(self, mean_d, adv)
        coef = torch.where(clipped, torch.zeros_like(value), torch.exp(mean_d) * adv) / n_t
        # c·(ℓ_θ − ℓ_θ.detach()) is zero in value and carries c·∇ℓ_θ as gradient.
        surrogate = value / n_t + coef * (cur - cur.detach())
        return Terms(surrogate=surrogate, value=(value / n_t).detach(), clipped=clipped)

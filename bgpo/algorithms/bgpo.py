"""BGPO: Boundary-Guided Policy Optimization (paper Eq. 13–14, ALGORITHM §3).

The VRPO value ``exp(mean_j d_ij)·A_i`` is replaced by the lower bound ``Σ_j g_ij`` with
``g_ij = A_i (1 + d_ij) / n_t`` for ``A_i ≥ 0`` (``e^z ≥ 1 + z``) and
``g_ij = A_i exp(d_ij) / n_t`` for ``A_i < 0`` (Jensen, sign flipped by ``A < 0``). Each term
involves one sample only, so it is back-propagated on its own: memory constant in ``n_t``.
At ``θ = θ_old`` (``d = 0``) value and gradient equal VRPO's.

Options: ``bound="taylor"`` / ``"jensen"`` are the paper's Table-3 ablations (one formula for
both signs); ``clip_eps`` (+ ``dual_clip``) clips each per-sample log-ratio PPO-style — off by
default, and inert on-policy where ``d = 0``.
"""

from __future__ import annotations

import torch

from bgpo.algorithms.base import Objective, SampleContext, Terms, clip_branch

BOUNDS = ("mixed", "taylor", "jensen")


def _term(d: torch.Tensor, taylor: torch.Tensor) -> torch.Tensor:
    # exp is evaluated only where it is used: an overflowing unused branch would turn the
    # zero gradient of torch.where into NaN.
    return torch.where(taylor, 1.0 + d, torch.exp(torch.where(taylor, torch.zeros_like(d), d)))


class BGPO(Objective):
    name = "bgpo"

    def __init__(self, bound: str = "mixed", **options):
        super().__init__(**options)
        if bound not in BOUNDS:
            raise ValueError(f"unknown BGPO bound {bound!r}; expected one of {BOUNDS}")
        self.bound = bound

    def sample_terms(self, cur, old, adv, n_t: int, ctx: SampleContext) -> Terms:
        d = cur - old  # (n,)
        if self.bound == "mixed":
            taylor = adv >= 0
        else:
            taylor = torch.full_like(adv, self.bound == "taylor", dtype=torch.bool)
        adv = adv.to(d.dtype)
        if self.clip_eps is None:
            obj = adv * _term(d, taylor)
            clipped = torch.zeros_like(taylor)
        else:
            f, f_clipped = _term(d, taylor), _term(self.clip_log_ratio(d), taylor)
            obj, clipped = clip_branch(adv, f, f_clipped, self.dual_clip)
        obj = obj / n_t
        return Terms(surrogate=obj, value=obj.detach(), clipped=clipped)

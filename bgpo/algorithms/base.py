"""The shared core of the RL objectives.

An objective turns per-sample log-likelihood quantities of the current policy (``cur``, with
grad) and of the rollout policy (``old``, constant) into the value it maximises. Two shapes:

- *linear* objectives are a sum of single-sample terms ``Σ_ij g_ij`` (BGPO, diffu-GRPO, the
  streamed exact VRPO gradient): :meth:`Objective.sample_terms` returns each term, and the
  update driver back-propagates each chunk of samples at once, so memory does not grow with
  ``n_t``;
- *non-linear* objectives (VRPO) need all ``n_t`` samples of a response before the value is
  known: :meth:`Objective.response_values` maps ``(R, K)`` quantities to ``(R,)`` values, and
  every sample's graph stays alive until that backward.

All functions here are pure: tensors in, tensors out; the driver (:mod:`bgpo.update`) owns the
forward passes, the chunking and the backward calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bgpo.elbo import NORMALISATIONS, elbo_terms
from bgpo.models.base import special_tokens
from bgpo.rollout import RolloutBatch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Mean of ``values`` over ``dim`` where ``mask`` is True (0 where the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


@dataclass(frozen=True)
class Terms:
    """What an objective returns for a chunk of ``n`` samples."""

    surrogate: torch.Tensor  # (n,) with grad: its gradient is the objective's gradient
    value: torch.Tensor  # (n,) detached: the objective's value, Σ over a response's samples = R̂_i
    clipped: torch.Tensor  # (n,) bool, or fraction of tokens: where a clipped branch (zero grad) won


@dataclass(frozen=True)
class SampleContext:
    """Per-sample extras the driver hands to :meth:`Objective.sample_terms`."""

    rows: torch.Tensor  # (n,) response index of each sample within the batch
    mean_d: torch.Tensor | None = None  # (n,) no-grad mean_j d_ij of the sample's response
    reference: torch.Tensor | None = None  # reference-model quantities, same shape as ``cur``
    completion_mask: torch.Tensor | None = None  # (n, L) bool, for token-level objectives


def clip_branch(
    adv: torch.Tensor,
    f: torch.Tensor,
    f_clipped: torch.Tensor,
    dual_clip: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's pessimistic choice ``min(A·f, A·f_clipped)``, then dual clip ``max(·, c·A)`` for A<0.

    Returns the objective and a bool tensor marking where a clipped branch (zero gradient) won.
    """
    plain, clipped = adv * f, adv * f_clipped
    obj = torch.minimum(plain, clipped)
    was_clipped = clipped < plain
    if dual_clip is not None:
        floor = dual_clip * adv
        dual = (adv < 0) & (obj < floor)
        obj = torch.where(dual, floor, obj)
        was_clipped = was_clipped | dual
    return obj, was_clipped


class Objective:
    """Base class: ELBO-level quantities, no clipping, zero-advantage responses skippable."""

    name: str = ""
    linear: bool = True
    needs_prepass: bool = False  # off-policy, needs mean_j d_ij of every response before backward

    def __init__(self, normalisation: str = "length", clip_eps: float | None = None,
                 dual_clip: float | None = None):
        if normalisation not in NORMALISATIONS:
            raise ValueError(
                f"unknown normalisation {normalisation!r}; expected one of {NORMALISATIONS}"
            )
        if clip_eps is not None and not 0.0 < clip_eps < 1.0:
            raise ValueError(f"clip_eps must be in (0, 1), got {clip_eps}")
        if dual_clip is not None and dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        self.normalisation = normalisation
        self.clip_eps = clip_eps
        self.dual_clip = dual_clip

    @property
    def skip_zero_advantage(self) -> bool:
        """Whether a response with ``A = 0`` contributes exactly zero gradient."""
        return True

    @property
    def uses_reference(self) -> bool:
        return False

    def log_likelihood(self, model, batch: RolloutBatch, rows: torch.Tensor, cols: torch.Tensor):
        """``ℓ_θ`` of the samples ``(rows[k], cols[k])``: ``(n,)``, one forward pass."""
        return elbo_terms(
            model, batch.sequences[rows], batch.attention_mask[rows], batch.prompt_length,
            batch.draws, rows, cols, special_tokens(model).mask, self.normalisation,
        )

    def clip_log_ratio(self, d: torch.Tensor) -> torch.Tensor:
        """``d`` clamped to ``[log(1-ε), log(1+ε)]`` (the ratio ``e^d`` to ``[1-ε, 1+ε]``)."""
        return d.clamp(math.log1p(-self.clip_eps), math.log1p(self.clip_eps))

    def sample_terms(self, cur, old, adv, n_t: int, ctx: SampleContext) -> Terms:
        raise NotImplementedError(f"{self.name} is not a sum of single-sample terms")

    def response_values(self, cur, old, adv) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{self.name} is linear: use sample_terms")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"

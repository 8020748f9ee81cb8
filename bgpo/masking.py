"""Timestep sampling and the forward (masking) process of a masked diffusion LM.

Follows ALGORITHM §1: at time ``t ∈ (0, 1]`` each *response* token is replaced by the mask
token independently with probability ``t`` (continuous weighting, weight ``1/t``), or exactly
``k`` response positions are masked uniformly at random (discrete weighting, weight ``L/k``,
LLaDA's likelihood estimator). Prompt positions, left padding included, are never masked:
masks here only ever cover the ``L`` response positions.

Reproducibility: a batch's draws are a :class:`MaskDraws` — one timestep and one integer seed
per (response ``i``, sample ``j``). The mask of sample ``(i, j)`` is regenerated from its own
seed whenever it is needed, so θ and θ_old (and every later off-policy update) see exactly the
same masked sequence without storing ``N × K × L`` booleans, and the result does not depend on
how samples are chunked into forward passes.

Departure from the paper: besides i.i.d. timesteps the default is stratified,
``t_j = (j + 1 - u) / K`` with one uniform ``u`` per response — every ``t_j`` is still U(0,1]
marginally (the estimator stays unbiased) but the ``K`` samples cover the interval evenly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TIMESTEP_SCHEMES = ("stratified", "iid")
WEIGHTINGS = ("continuous", "discrete")
_SEED_HIGH = 2**62


@dataclass(frozen=True)
class MaskDraws:
    """Monte-Carlo draws of ``N`` responses × ``K`` samples (``K`` = ``n_t``)."""

    t: torch.Tensor  # (N, K) float64 in (0, 1]: the timestep of sample (i, j)
    seeds: torch.Tensor  # (N, K) int64: seed of the mask draw of sample (i, j)
    weighting: str = "continuous"

    def __post_init__(self):
        if self.t.dim() != 2 or self.t.shape != self.seeds.shape:
            raise ValueError(
                f"draws need t and seeds of the same (N, K) shape, got "
                f"{tuple(self.t.shape)} and {tuple(self.seeds.shape)}"
            )
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; expected one of {WEIGHTINGS}")

    @property
    def num_responses(self) -> int:
        return self.t.shape[0]

    @property
    def n_t(self) -> int:
        return self.t.shape[1]

    def select(self, rows: torch.Tensor) -> MaskDraws:
        """The draws of the responses ``rows``."""
        return MaskDraws(self.t[rows], self.seeds[rows], self.weighting)


def sample_timesteps(
    num_responses: int, n_t: int, generator: torch.Generator, scheme: str = "stratified"
) -> torch.Tensor:
    """Timesteps ``(N, K)`` in (0, 1], float64: i.i.d. uniform or stratified per response."""
    if n_t < 1:
        raise ValueError(f"n_t must be at least 1, got {n_t}")
    if scheme == "iid":
        u = torch.rand(num_responses, n_t, generator=generator, dtype=torch.float64)
        return 1.0 - u
    if scheme == "stratified":
        u = torch.rand(num_responses, 1, generator=generator, dtype=torch.float64)
        j = torch.arange(n_t, dtype=torch.float64)
        return (j + 1.0 - u) / n_t
    raise ValueError(f"unknown timestep scheme {scheme!r}; expected one of {TIMESTEP_SCHEMES}")


def draw_masks(
    num_responses: int,
    n_t: int,
    generator: torch.Generator,
    scheme: str = "stratified",
    weighting: str = "continuous",
) -> MaskDraws:
    """Draw timesteps and per-sample mask seeds for ``num_responses`` responses."""
    t = sample_timesteps(num_responses, n_t, generator, scheme)
    seeds = torch.randint(0, _SEED_HIGH, (num_responses, n_t), generator=generator)
    return MaskDraws(t=t, seeds=seeds, weighting=weighting)


def _uniforms(seed: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand(length, generator=g, dtype=torch.float64)


def masks_from_draws(
    t: torch.Tensor, seeds: torch.Tensor, weighting: str, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Response masks ``(n, L)`` (True = masked) and ELBO weights ``(n,)`` for flat draws.

    ``t`` and ``seeds`` are 1-D (one entry per sample). Continuous: each position masked iff its
    uniform ``< t``, weight ``1/t``. Discrete: ``k = ceil(t·L)`` (uniform on {1..L} when ``t``
    is U(0,1]) positions with the smallest uniforms are masked, weight ``L/k``.
    """
    if length < 1:
        raise ValueError(f"response length must be at least 1, got {length}")
    u = torch.stack([_uniforms(s, length) for s in seeds.tolist()]) if len(seeds) else (
        torch.empty(0, length, dtype=torch.float64)
    )
    if weighting == "continuous":
        return u < t[:, None], 1.0 / t
    if weighting == "discrete":
        k = torch.ceil(t * length).clamp(1, length)
        ranks = u.argsort(dim=1).argsort(dim=1)
        return ranks < k[:, None], length / k
    raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")


def sample_masks(
    draws: MaskDraws, rows: torch.Tensor, cols: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks ``(n, L)`` and weights ``(n,)`` of the samples ``(rows[k], cols[k])``."""
    return masks_from_draws(draws.t[rows, cols], draws.seeds[rows, cols], draws.weighting, length)


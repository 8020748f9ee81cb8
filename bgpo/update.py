"""The streaming update: one objective over one mini-batch of rollouts, gradients accumulated.

ALGORITHM §4 steps 3–4. The ``(response i, sample j)`` pairs of the mini-batch are processed
``mc_batch_size`` at a time, each chunk in ONE forward pass (a memory/speed trade-off that
does not change the gradient). Linear objectives (BGPO, vrpo-exact, diffu-GRPO) call backward
on every chunk and free its graph at once, so memory does not depend on ``n_t``; the
non-linear VRPO keeps the graphs of all ``n_t`` samples of each response micro-batch alive until
its backward. The loss is ``−(1/N) Σ_i R̂_i`` with ``N`` the mini-batch's responses (or the
``normaliser`` given, to accumulate several calls into one optimizer step).

On-policy (``old is None``) ``ℓ_old`` is ``ℓ_θ.detach()`` from the same forward pass; off-policy
the trainer computes it once with :func:`compute_old` before the first update and passes it
to every later one. Responses with ``A = 0`` are skipped where the objective's gradient for
them is exactly zero. The caller owns ``zero_grad`` and the optimizer step.
"""

from __future__ import annotations

import torch

from bgpo.algorithms.base import Objective, SampleContext
from bgpo.rollout import RolloutBatch


def sample_pairs(rows: torch.Tensor, n_t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(i, j)`` pairs of the responses ``rows``, response-major: ``(R·K,)`` each."""
    return rows.repeat_interleave(n_t), torch.arange(n_t).repeat(len(rows))


def _chunks(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@torch.no_grad()
def _likelihoods(model, objective: Objective, batch, rows, cols, mc_batch_size) -> torch.Tensor:
    parts = [objective.log_likelihood(model, batch, rows[s], cols[s])
             for s in _chunks(len(rows), mc_batch_size)]
    return torch.cat(parts)


def compute_old(
    model, objective: Objective, batch: RolloutBatch, mc_batch_size: int = 1
) -> torch.Tensor:
    """``ℓ_old`` of every sample of ``batch`` without grad: ``(N, K)`` (token level: ``(N, K, L)``)."""
    _check_chunk(mc_batch_size)
    rows, cols = sample_pairs(torch.arange(batch.num_responses), batch.n_t)
    values = _likelihoods(model, objective, batch, rows, cols, mc_batch_size)
    return values.view(batch.num_responses, batch.n_t, *values.shape[1:])


def _check_chunk(mc_batch_size: int) -> None:
    if not isinstance(mc_batch_size, int) or mc_batch_size < 1:
        raise ValueError(f"mc_batch_size must be a positive integer, got {mc_batch_size!r}")


class _Metrics:
    """Detached running sums, read once at the end (one device sync per update)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.maxes: dict[str, torch.Tensor] = {}
        self.mins: dict[str, torch.Tensor] = {}
        self.count = {"samples": 0, "clip_units": 0, "d_elements": 0}

    def _fold(self, table, key, value, op):
        table[key] = value if key not in table else op(table[key], value)

    def add(self, cur, old, value, clipped, tokens, samples):
        d = (cur.detach() - old).flatten().double()
        ratio = torch.exp(d)
        self._fold(self.sums, "value", value.double().sum(), torch.add)
        self._fold(self.sums, "abs_d", d.abs().sum(), torch.add)
        self._fold(self.sums, "ratio", ratio.sum(), torch.add)
        self._fold(self.sums, "clipped", clipped.double().sum(), torch.add)
        self._fold(self.sums, "elbo", cur.detach().double().sum(), torch.add)
        self._fold(self.sums, "tokens", tokens, torch.add)
        self._fold(self.maxes, "abs_d", d.abs().max(), torch.maximum)
        self._fold(self.maxes, "ratio", ratio.max(), torch.maximum)
        self._fold(self.mins, "ratio", ratio.min(), torch.minimum)
        self.count["samples"] += samples
        self.count["clip_units"] += clipped.numel()
        self.count["d_elements"] += d.numel()

    def result(self, normaliser: float, skipped: int) -> dict[str, float]:
        n_el, n_clip = max(self.count["d_elements"], 1), max(self.count["clip_units"], 1)
        s = {k: v.item() for k, v in self.sums.items()}
        objective = s.get("value", 0.0) / normaliser
        return {
            "loss": -objective,
            "objective": objective,
            "d_abs_mean": s.get("abs_d", 0.0) / n_el,
            "d_abs_max": self.maxes["abs_d"].item() if self.maxes else 0.0,
            "ratio_mean": s.get("ratio", 0.0) / n_el if s else 1.0,
            "ratio_min": self.mins["ratio"].item() if self.mins else 1.0,
            "ratio_max": self.maxes["ratio"].item() if self.maxes else 1.0,
            "clip_frac": s.get("clipped", 0.0) / n_clip,
            "elbo_mean": s.get("elbo", 0.0) / n_el,
            "samples": float(self.count["samples"]),
            "responses_skipped": float(skipped),
            "tokens": float(s.get("tokens", 0.0)),
        }


def _context(objective, batch, model_ref, rows, cols, cur, mean_d, mc_batch_size):
    reference = None
    if objective.uses_reference and model_ref is not None:
        reference = _likelihoods(model_ref, objective, batch, rows, cols, mc_batch_size)
    cm = None if batch.completion_mask is None else batch.completion_mask[rows].to(cur.device)
    return SampleContext(rows=rows, mean_d=mean_d, reference=reference, completion_mask=cm)


def _linear_group(model, objective, batch, group, old, ref_model, opts, metrics):
    k, chunk, scale = batch.n_t, opts["mc_batch_size"], opts["scale"]
    rows, cols = sample_pairs(group, k)
    mean_d = None
    if objective.needs_prepass and old is not None:
        now = _likelihoods(model, objective, batch, rows, cols, chunk)
        mean_d = (now - old[rows, cols].to(now)).view(len(group), k).mean(1).repeat_interleave(k)
    for s in _chunks(len(rows), chunk):
        r, c = rows[s], cols[s]
        cur = objective.log_likelihood(model, batch, r, c)
        o = cur.detach() if old is None else old[r, c].to(cur)
        md = None if mean_d is None else mean_d[s].to(cur)
        ctx = _context(objective, batch, ref_model, r, c, cur, md, chunk)
        terms = objective.sample_terms(cur, o, batch.advantages[r].to(cur.device), k, ctx)
        (terms.surrogate.sum() * -scale).backward()
        metrics.add(cur, o, terms.value, terms.clipped, batch.attention_mask[r].sum(), len(r))


def _nonlinear_group(model, objective, batch, group, old, opts, metrics):
    k, chunk = batch.n_t, opts["mc_batch_size"]
    rows, cols = sample_pairs(group, k)
    parts = [objective.log_likelihood(model, batch, rows[s], cols[s])
             for s in _chunks(len(rows), chunk)]  # every graph stays alive until backward
    cur = torch.cat(parts).view(len(group), k)  # (R, K)
    o = cur.detach() if old is None else old[group].to(cur)
    values, clipped = objective.response_values(cur, o, batch.advantages[group].to(cur.device))
    (values.sum() * -opts["scale"]).backward()
    metrics.add(cur, o, values.detach(), clipped, batch.attention_mask[rows].sum(), len(rows))


def streaming_update(
    model: torch.nn.Module,
    objective: Objective,
    batch: RolloutBatch,
    *,
    old: torch.Tensor | None = None,
    ref_model: torch.nn.Module | None = None,
    mc_batch_size: int = 1,
    micro_batch_size: int | None = None,
    normaliser: float | None = None,
) -> dict[str, float]:
    """Accumulate ``∇(−(1/N) Σ_i R̂_i)`` into ``model``'s ``.grad``; return detached metrics."""
    _check_chunk(mc_batch_size)
    if micro_batch_size is not None and micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be a positive integer, got {micro_batch_size!r}")
    n = batch.num_responses
    if old is not None and tuple(old.shape[:2]) != (n, batch.n_t):
        raise ValueError(f"old values of shape {tuple(old.shape)} do not match ({n}, {batch.n_t})")
    if objective.uses_reference and ref_model is None:
        raise ValueError(f"{objective.name} with beta > 0 needs ref_model")
    active = torch.arange(n)
    if objective.skip_zero_advantage:
        active = active[batch.advantages.cpu() != 0]
    opts = {"mc_batch_size": mc_batch_size, "scale": 1.0 / (normaliser or n)}
    metrics = _Metrics()
    for group in active.split(micro_batch_size or max(len(active), 1)):
        if objective.linear:
            _linear_group(model, objective, batch, group, old, ref_model, opts, metrics)
        else:
            _nonlinear_group(model, objective, batch, group, old, opts, metrics)
    return metrics.result(normaliser or n, skipped=n - len(active))

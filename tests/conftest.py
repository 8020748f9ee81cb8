"""Shared fixtures: tiny randomly initialised models built in-process, float64 for exactness."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

from bgpo.masking import draw_masks  # noqa: E402
from bgpo.models import LLaDAConfig, LLaDAModelLM  # noqa: E402
from bgpo.rollout import RolloutBatch  # noqa: E402

VOCAB = 12  # ids 0 pad, 1 eos, 2 mask, 3.. ordinary tokens


def tiny_model(seed: int = 0, dtype=torch.float64, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=VOCAB, d_model=16, n_heads=2, n_layers=2, mlp_hidden_size=24,
               mask_token_id=2, eos_token_id=1, pad_token_id=0, init_std=0.3)
    cfg.update(overrides)
    return LLaDAModelLM(LLaDAConfig(**cfg)).to(dtype)


def tiny_batch(n=4, p=3, length=5, n_t=4, seed=1, advantages=None, pad_first=True,
               scheme="stratified", weighting="continuous") -> RolloutBatch:
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(3, VOCAB, (n, p + length), generator=g)
    attn = torch.ones(n, p + length, dtype=torch.bool)
    if pad_first and p > 1:
        seqs[0, 0] = 0
        attn[0, 0] = False
    if advantages is None:
        advantages = torch.randn(n, generator=g, dtype=torch.float64)
    draws = draw_masks(n, n_t, g, scheme=scheme, weighting=weighting)
    return RolloutBatch(seqs, attn, p, advantages.to(torch.float64), draws)


class InputRecorder(torch.nn.Module):
    """Wraps a model and keeps every input_ids it is called with (in ``seen``)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.seen = inner, inner.config, []

    def forward(self, input_ids, attention_mask=None):
        self.seen.append(input_ids.clone())
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(),
                      dtype=p.dtype) for p in model.parameters()])


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-300)).item()


@pytest.fixture
def model():
    return tiny_model()

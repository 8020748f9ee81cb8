"""CUDA checks (skipped by default; run with ``python -m pytest -m gpu`` on a GPU machine)."""

from __future__ import annotations

import pytest
import torch
from conftest import max_rel_err, tiny_batch, tiny_model

from bgpo.algorithms import get_objective
from bgpo.sampler import SamplerConfig, generate
from bgpo.update import streaming_update

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _grad(model, name, batch, **kw):
    model.zero_grad()
    streaming_update(model, get_objective(name), batch, **kw)
    return torch.cat([p.grad.flatten() for p in model.parameters()]).cpu()


def test_bgpo_equals_vrpo_on_cuda_float64_and_matches_cpu():
    cpu_model = tiny_model()
    gpu_model = tiny_model().cuda()
    batch = tiny_batch(n=5, n_t=6)
    gpu_batch = type(batch)(batch.sequences.cuda(), batch.attention_mask.cuda(), batch.prompt_length,
                            batch.advantages.cuda(), batch.draws)
    bgpo = _grad(gpu_model, "bgpo", gpu_batch, mc_batch_size=4)
    vrpo = _grad(gpu_model, "vrpo", gpu_batch)
    assert max_rel_err(bgpo, vrpo) <= 1e-9
    assert max_rel_err(bgpo, _grad(cpu_model, "bgpo", batch, mc_batch_size=4)) <= 1e-9


def test_bfloat16_update_is_finite():
    model = tiny_model(dtype=torch.bfloat16).cuda()
    batch = tiny_batch(n=4, n_t=8)
    batch = type(batch)(batch.sequences.cuda(), batch.attention_mask.cuda(), batch.prompt_length,
                        batch.advantages.cuda(), batch.draws)
    for name in ("bgpo", "vrpo", "vrpo-exact", "diffu-grpo"):
        assert torch.isfinite(_grad(model, name, batch, mc_batch_size=8)).all(), name


def test_sampler_on_cuda_deterministic_and_greedy_matches_cpu():
    model = tiny_model()
    prompts = torch.randint(3, 12, (3, 4))
    cfg = SamplerConfig(gen_length=8, steps=8, block_length=4, temperature=0.0)
    cpu = generate(model, prompts, None, cfg).sequences
    gpu = generate(model.cuda(), prompts.cuda(), None, cfg).sequences.cpu()
    assert torch.equal(cpu, gpu)
    hot = SamplerConfig(gen_length=8, steps=8, block_length=4, temperature=0.8)
    a = generate(model, prompts.cuda(), None, hot, generator=torch.Generator().manual_seed(1)).sequences
    b = generate(model, prompts.cuda(), None, hot, generator=torch.Generator().manual_seed(1)).sequences
    assert torch.equal(a, b)

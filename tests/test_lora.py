"""LoRA adapters: exact at initialisation, exact chain-rule gradients, merge, and the trainer path."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import max_rel_err, tiny_batch, tiny_model

from bgpo.algorithms import get_objective
from bgpo.models.lora import DEFAULT_TARGETS, LoRALinear, apply_lora, has_lora, merge_lora
from bgpo.update import streaming_update


def _randomise_adapters(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g, dtype=torch.float64) * 0.2)


def test_fresh_adapters_leave_the_model_unchanged_and_only_they_train():
    base, adapted = tiny_model(), tiny_model()
    trainable = apply_lora(adapted, rank=3, alpha=6.0)
    ids = torch.randint(3, 12, (2, 7))
    assert torch.equal(base(input_ids=ids).logits, adapted(input_ids=ids).logits)  # B = 0 exactly
    n_layers = base.config.n_layers
    assert len(trainable) == 2 * len(DEFAULT_TARGETS) * n_layers
    assert {id(p) for p in trainable} == {id(p) for p in adapted.parameters() if p.requires_grad}
    trainable_names = [name for name, p in adapted.named_parameters() if p.requires_grad]
    assert all(name.endswith(("lora_A", "lora_B")) for name in trainable_names)
    # the output head (LLaDA calls it ff_out too, outside the blocks) is not adapted
    assert not isinstance(adapted.model.transformer["ff_out"], LoRALinear)


def test_merge_gives_the_same_function_and_a_plain_model():
    model = tiny_model()
    apply_lora(model, rank=2, alpha=4.0)
    _randomise_adapters(model)
    ids = torch.randint(3, 12, (3, 6))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        merged = merge_lora(model)
        after = merged(input_ids=ids).logits
    assert not has_lora(merged) and all(p.requires_grad for p in merged.parameters())
    assert max_rel_err(after, before) < 1e-12
    assert set(merged.state_dict()) == set(tiny_model().state_dict())  # saves like the base model


@pytest.mark.parametrize("algo", ["bgpo", "diffu-grpo"])
def test_adapter_gradients_follow_the_chain_rule_through_the_merged_weights(algo):
    """dL/dB = scale · G Aᵀ and dL/dA = scale · Bᵀ G, with G = dL/dW of the merged model."""
    lora = tiny_model()
    apply_lora(lora, rank=2, alpha=5.0)
    _randomise_adapters(lora)
    full = merge_lora(tiny_model().requires_grad_(True))  # a plain copy to receive merged weights
    full.load_state_dict(merge_lora(copy.deepcopy(lora)).state_dict())
    batch = tiny_batch(n=3, length=5, n_t=4)
    ref = tiny_model() if algo == "diffu-grpo" else None
    objective = get_objective(algo)
    streaming_update(lora, objective, batch, ref_model=ref, mc_batch_size=5)
    streaming_update(full, objective, batch, ref_model=ref, mc_batch_size=5)
    checked = 0
    for (name, module), block_full in _pairs(lora, full):
        g_w = block_full.weight.grad
        want_b = module.scale * g_w @ module.lora_A.detach().t()
        want_a = module.scale * module.lora_B.detach().t() @ g_w
        assert max_rel_err(module.lora_B.grad, want_b) < 1e-10, name
        assert max_rel_err(module.lora_A.grad, want_a) < 1e-10, name
        assert module.base.weight.grad is None  # the base stays frozen
        checked += 1
    assert checked == len(DEFAULT_TARGETS) * lora.config.n_layers


def _pairs(lora, full):
    full_modules = dict(full.named_modules())
    for name, module in lora.named_modules():
        if isinstance(module, LoRALinear):
            yield (name, module), full_modules[name]


def test_lora_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="rank must be at least 1"):
        apply_lora(model, rank=0, alpha=1.0)
    apply_lora(model, rank=1, alpha=1.0)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(model, rank=1, alpha=1.0)
    with pytest.raises(ValueError, match="not a layer"):
        apply_lora(tiny_model(), rank=1, alpha=1.0, targets=("nope",))
    with pytest.raises(ValueError, match="built-in LLaDA-architecture model"):
        apply_lora(torch.nn.Linear(2, 2), rank=1, alpha=1.0)

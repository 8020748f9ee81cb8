"""The built-in LLaDA-architecture model, its tokenizer, the interface and loading."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB, tiny_model

from bgpo.models import (
    LLaDAConfig,
    LLaDAModelLM,
    ModelInterfaceError,
    char_tokenizer,
    load_model,
    model_logits,
    special_tokens,
)


def test_logits_shape_and_llada_parameter_names(model):
    x = torch.randint(3, VOCAB, (2, 7))
    assert model_logits(model, x).shape == (2, 7, VOCAB)
    names = set(model.state_dict())
    for name in ("model.transformer.wte.weight", "model.transformer.ln_f.weight",
                 "model.transformer.ff_out.weight", "model.transformer.blocks.1.q_proj.weight",
                 "model.transformer.blocks.0.up_proj.weight", "model.transformer.blocks.0.attn_out.weight",
                 "model.transformer.blocks.0.ff_proj.weight", "model.transformer.blocks.0.ff_out.weight"):
        assert name in names


def test_attention_is_bidirectional(model):
    x = torch.randint(3, VOCAB, (1, 6))
    y = x.clone()
    y[0, 5] = 3 if x[0, 5] != 3 else 4
    # changing the LAST token changes the logits at the FIRST position: no causal mask
    assert not torch.allclose(model_logits(model, x)[0, 0], model_logits(model, y)[0, 0])


def test_left_padding_is_invisible(model):
    x = torch.randint(3, VOCAB, (1, 5))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)
    mask = torch.tensor([[False] * 3 + [True] * 5])
    alone = model_logits(model, x)
    batched = model_logits(model, padded, mask)[:, 3:]
    torch.testing.assert_close(batched, alone, rtol=1e-12, atol=1e-12)


def test_grouped_query_attention_and_checkpointing_match():
    model = tiny_model(n_heads=4, n_kv_heads=2)
    x = torch.randint(3, VOCAB, (2, 6))
    model.train()
    model_logits(model, x).square().sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model_logits(model, x).square().sum().backward()
    for a, p in zip(plain, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a, rtol=1e-12, atol=1e-12)


def test_save_and_load_roundtrip(tmp_path):
    tok = char_tokenizer()
    model = tiny_model(vocab_size=len(tok)).float()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded, tok2 = load_model(str(tmp_path))
    x = torch.randint(4, len(tok), (2, 6))
    torch.testing.assert_close(model_logits(loaded, x), model_logits(model, x))
    assert special_tokens(loaded).mask == tok2.mask_token_id == 2


def test_tokenizer_roundtrip_and_specials():
    tok = char_tokenizer()
    text = "3 5 7>22=\n<answer>(3+5)*7</answer>"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    assert (tok.pad_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2)
    assert tok.decode([tok.eos_token_id, *ids[:2]], skip_special_tokens=True) == text[:2]


def test_bad_inputs_give_clear_errors(model, tmp_path):
    with pytest.raises(ValueError, match="input_ids must be"):
        model_logits(model, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model_logits(model, torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 4))
    no_mask = LLaDAModelLM(LLaDAConfig(vocab_size=VOCAB, mask_token_id=None))
    with pytest.raises(ModelInterfaceError, match="no mask token"):
        special_tokens(no_mask)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not divisible"):
        LLaDAConfig(d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="block_type"):
        LLaDAConfig(block_type="sequential")

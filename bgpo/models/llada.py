"""The built-in diffusion LM: the LLaDA architecture, any size, as a Hugging Face model.

LLaDA (Nie et al., "Large Language Diffusion Models", 2025) is a Llama-style Transformer with
the causal mask removed: pre-norm blocks with RMSNorm, rotary position embeddings (rotate-half
layout), separate q/k/v projections, a SwiGLU MLP (``ff_out(silu(ff_proj(x)) * up_proj(x))``),
no biases, an untied output head, and a mask token as the absorbing state of the forward process.
Parameter names and config fields follow the released LLaDA-8B checkpoints
(``model.transformer.blocks.N.q_proj.weight``, ``d_model``, ``n_heads``, ``mlp_hidden_size``,
``rope_theta``, ...), so the same class loads those weights without remote code.

Departures: attention goes through ``torch.nn.functional.scaled_dot_product_attention`` with a
key-padding mask built from ``attention_mask``; rotary positions count real tokens only
(``cumsum(attention_mask) - 1``), so a left-padded prompt sees the same positions as the same
prompt unpadded; gradient checkpointing is ours (per block, non-reentrant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class LLaDAConfig(PretrainedConfig):
    """Size and special tokens of a LLaDA-architecture model (field names as in LLaDA's config)."""

    model_type = "llada"

    def __init__(
        self,
        d_model: int = 64,
        n_heads: int = 4,
        n_kv_heads: int | None = None,
        n_layers: int = 2,
        mlp_hidden_size: int = 128,
        vocab_size: int = 100,
        embedding_size: int | None = None,
        max_sequence_length: int = 4096,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        include_bias: bool = False,
        include_qkv_bias: bool = False,
        weight_tying: bool = False,
        init_std: float = 0.02,
        mask_token_id: int | None = 2,
        eos_token_id: int | None = 1,
        pad_token_id: int | None = 0,
        **kwargs,
    ):
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}")
        if (d_model // n_heads) % 2:
            raise ValueError(f"head dimension {d_model // n_heads} must be even for rotary embeddings")
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size or vocab_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.weight_tying = weight_tying
        self.init_std = init_std
        self.mask_token_id = mask_token_id
        # LLaDA's checkpoints ship config fields this architecture fixes; refuse other values.
        for key, fixed in (("block_type", "llama"), ("activation_type", "silu"),
                           ("layer_norm_type", "rms"), ("rope", True), ("alibi", False)):
            if key in kwargs and kwargs[key] != fixed:
                raise ValueError(f"unsupported LLaDA config: {key}={kwargs[key]!r} (expected {fixed!r})")
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers


class RMSNorm(nn.Module):
    """Root-mean-square normalisation, computed in at least float32."""

    def __init__(self, dim: int, eps: float, bias: bool):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.to(torch.promote_types(dtype, torch.float32))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        h = h.to(dtype) * self.weight
        return h if self.bias is None else h + self.bias


def rotary_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin tables ``(B, 1, T, head_dim)`` for integer positions ``(B, T)``."""
    work = torch.promote_types(dtype, torch.float32)
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, device=position_ids.device, dtype=work) / head_dim
    )
    freqs = position_ids.to(work)[..., None] * inv_freq  # (B, T, head_dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, head_dim)
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x.to(cos.dtype) * cos + rotated.to(cos.dtype) * sin).to(x.dtype)


class LLaDABlock(nn.Module):
    """One pre-norm Transformer block: bidirectional attention, then a SwiGLU MLP."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        d, h = config.d_model, config.d_model // config.n_heads
        qkv_bias = config.include_bias or config.include_qkv_bias
        self.config = config
        self.head_dim = h
        self.attn_norm = RMSNorm(d, config.rms_norm_eps, config.include_bias)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps, config.include_bias)
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, config.n_kv_heads * h, bias=qkv_bias)
        self.v_proj = nn.Linear(d, config.n_kv_heads * h, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=config.include_bias)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=config.include_bias)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=config.include_bias)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=config.include_bias)

    def forward(self, x, cos, sin, key_mask):
        # x: (B, T, d); key_mask: (B, 1, 1, T) bool, True = attend, or None
        b, t, _ = x.shape
        cfg = self.config
        hx = self.attn_norm(x)
        q = self.q_proj(hx).view(b, t, cfg.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hx).view(b, t, cfg.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hx).view(b, t, cfg.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cfg.n_kv_heads != cfg.n_heads:
            rep = cfg.n_heads // cfg.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=False)
        x = x + self.attn_out(att.transpose(1, 2).reshape(b, t, cfg.d_model))
        hx = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(hx)) * self.up_proj(hx))


class LLaDACore(nn.Module):
    """Embedding, blocks, final norm and output head, under LLaDA's parameter names."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False
        modules = {
            "wte": nn.Embedding(config.embedding_size, config.d_model),
            "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
            "ln_f": RMSNorm(config.d_model, config.rms_norm_eps, config.include_bias),
        }
        if not config.weight_tying:
            modules["ff_out"] = nn.Linear(config.d_model, config.embedding_size, bias=False)
        self.transformer = nn.ModuleDict(modules)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        cfg = self.config
        if attention_mask is None:
            key_mask = None
            if position_ids is None:
                position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
                position_ids = position_ids.expand_as(input_ids)
        else:
            attention_mask = attention_mask.bool()
            key_mask = attention_mask[:, None, None, :]
            if position_ids is None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        x = self.transformer["wte"](input_ids)
        cos, sin = rotary_cos_sin(position_ids, cfg.d_model // cfg.n_heads, cfg.rope_theta, x.dtype)
        for block in self.transformer["blocks"]:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, cos, sin, key_mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, key_mask)
        x = self.transformer["ln_f"](x)
        if cfg.weight_tying:
            logits = F.linear(x, self.transformer["wte"].weight)
        else:
            logits = self.transformer["ff_out"](x)
        return logits[..., : cfg.vocab_size]


class LLaDAModelLM(PreTrainedModel):
    """LLaDA-architecture masked diffusion LM: ``input_ids (B, T)`` → ``logits (B, T, V)``."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDACore(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them."""
        self.model.gradient_checkpointing = enabled

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs):
        self.set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self):
        self.set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.model.gradient_checkpointing

    def get_input_embeddings(self):
        return self.model.transformer["wte"]

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        logits = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return MaskedLMOutput(logits=logits)

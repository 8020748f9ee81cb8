"""LoRA adapters for the built-in model (and any model made of ``nn.Linear`` layers).

``apply_lora(model, rank, alpha)`` replaces every targeted ``nn.Linear`` inside the transformer
blocks by a :class:`LoRALinear`, ``W x + (alpha / rank) · B A x``, with ``A`` (rank × in) drawn
like a fresh linear layer and ``B`` (out × rank) zero, so the adapted model starts out computing
exactly what the base model computes. Every other parameter is frozen. ``merge_lora`` folds
``(alpha / rank) · B A`` into ``W`` and puts plain ``nn.Linear`` layers back, so a trained model
saves as an ordinary checkpoint that :func:`bgpo.models.load_model` reads without adapters.

Targets are module names inside each block; the default covers LLaDA's attention and MLP
projections (``q_proj k_proj v_proj attn_out ff_proj up_proj ff_out``). The output head (also
called ``ff_out`` in LLaDA, but outside the blocks) and the embeddings are never adapted.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``scale · B A``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base
        self.rank, self.scale = rank, alpha / rank
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        bound = 1.0 / math.sqrt(base.in_features)  # nn.Linear's default (kaiming-uniform, a = sqrt(5))
        with torch.no_grad():
            a = torch.rand(self.lora_A.shape, generator=generator, dtype=torch.float64) * 2 - 1
            self.lora_A.copy_(a * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight."""
        with torch.no_grad():
            delta = (self.lora_B.double() @ self.lora_A.double()) * self.scale
            self.base.weight.add_(delta.to(self.base.weight.dtype))
        self.base.weight.requires_grad_(True)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(True)
        return self.base


def _blocks(model: nn.Module) -> nn.Module:
    transformer = getattr(getattr(model, "model", None), "transformer", None)
    blocks = None if transformer is None else getattr(transformer, "blocks", None)
    if blocks is None:
        raise ValueError("LoRA needs the built-in LLaDA-architecture model (model.transformer.blocks)")
    return blocks


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = DEFAULT_TARGETS,
               seed: int = 0) -> list[nn.Parameter]:
    """Adapt ``targets`` in every block, freeze everything else; returns the trainable parameters."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    adapted = 0
    for block in _blocks(model):
        for name in targets:
            layer = getattr(block, name, None)
            if layer is None:
                raise ValueError(f"LoRA target {name!r} is not a layer of the model's blocks")
            if isinstance(layer, LoRALinear):
                raise ValueError("the model already has LoRA adapters")
            if not isinstance(layer, nn.Linear):
                raise ValueError(f"LoRA target {name!r} is a {type(layer).__name__}, not nn.Linear")
            setattr(block, name, LoRALinear(layer, rank, alpha, generator))
            adapted += 1
    if not adapted:
        raise ValueError("LoRA: no layer was adapted (empty targets?)")
    return [p for p in model.parameters() if p.requires_grad]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight, in place; the model is plain again (all trainable)."""
    for block in _blocks(model):
        for name, layer in list(block.named_children()):
            if isinstance(layer, LoRALinear):
                setattr(block, name, layer.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())

"""The diffusion-LM interface every part of the project talks to.

A diffusion LM here is any ``torch.nn.Module`` that maps ``input_ids (B, T)`` plus an
optional ``attention_mask (B, T)`` (True/1 = real token, False/0 = left padding) to logits
``(B, T, V)`` aligned with positions (no shift: the logits at position ``i`` predict token
``i``), and whose config names a mask token. The built-in model (:mod:`bgpo.models.llada`)
and hub models loaded through :mod:`bgpo.models.loading` both satisfy it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class ModelInterfaceError(ValueError):
    """A model does not provide what a diffusion LM must provide."""


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids the diffusion process needs: ``mask`` (the absorbing state), ``eos``, ``pad``."""

    mask: int
    eos: int
    pad: int


def special_tokens(model: torch.nn.Module) -> SpecialTokens:
    """Read the mask/EOS/pad ids from ``model.config`` (one-line error if the mask id is missing)."""
    config = getattr(model, "config", None)
    mask = getattr(config, "mask_token_id", None)
    if mask is None:
        raise ModelInterfaceError(
            f"{type(model).__name__} has no mask token: its config must set `mask_token_id`"
        )
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    if eos is None:
        raise ModelInterfaceError(f"{type(model).__name__}'s config sets no `eos_token_id`")
    pad = getattr(config, "pad_token_id", None)
    return SpecialTokens(mask=int(mask), eos=int(eos), pad=int(eos if pad is None else pad))


def model_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``(B, T, V)`` of ``model`` on ``input_ids (B, T)``, whatever the model returns."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match "
            f"input_ids shape {tuple(input_ids.shape)}"
        )
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    if logits.shape[:2] != input_ids.shape:
        raise ModelInterfaceError(
            f"model returned logits of shape {tuple(logits.shape)} for input {tuple(input_ids.shape)}"
        )
    return logits

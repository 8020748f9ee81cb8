"""Group-relative advantages (ALGORITHM §2, paper Eq. 18)."""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """``A_i = (r_i − mean_G r) / (std_G r + eps)`` over consecutive groups of ``group_size``.

    ``rewards (B·G,)``; unbiased std; ``scale=False`` gives mean-centring only (d1's choice).
    A group of one has zero advantage.
    """
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)} cannot be split into groups of {group_size}"
        )
    grouped = rewards.double().view(-1, group_size)  # (B, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale and group_size > 1:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)

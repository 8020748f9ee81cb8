"""A typed batch of rollouts: what the objectives need to compute one update.

Shapes: ``N`` responses, ``P`` prompt length (prompts left-padded to a common length), ``L``
response length (fixed, LLaDA convention: the EOS tail counts as response), ``K`` = ``n_t``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from bgpo.masking import MaskDraws


@dataclass(frozen=True)
class RolloutBatch:
    sequences: torch.Tensor  # (N, P+L) long: left-padded prompt, then the response
    attention_mask: torch.Tensor  # (N, P+L) bool: True at real tokens, False at left padding
    prompt_length: int  # P
    advantages: torch.Tensor  # (N,) float: A_i
    draws: MaskDraws  # (N, K) timesteps and mask seeds, shared by θ and θ_old
    completion_mask: torch.Tensor | None = None  # (N, L) bool: True at tokens token-level losses count

    def __post_init__(self):
        n = self.sequences.shape[0] if self.sequences.dim() == 2 else -1
        if self.sequences.dim() != 2:
            raise ValueError(f"sequences must be (N, P+L), got shape {tuple(self.sequences.shape)}")
        if self.attention_mask.shape != self.sequences.shape:
            raise ValueError(
                f"attention_mask shape {tuple(self.attention_mask.shape)} != sequences shape "
                f"{tuple(self.sequences.shape)}"
            )
        if not 0 <= self.prompt_length < self.sequences.shape[1]:
            raise ValueError(
                f"prompt_length {self.prompt_length} leaves no response in sequences of length "
                f"{self.sequences.shape[1]}"
            )
        if self.advantages.shape != (n,):
            raise ValueError(f"advantages must be ({n},), got {tuple(self.advantages.shape)}")
        if self.draws.num_responses != n:
            raise ValueError(f"draws cover {self.draws.num_responses} responses, batch has {n}")
        if self.completion_mask is not None and self.completion_mask.shape != (
            n, self.response_length
        ):
            raise ValueError(
                f"completion_mask must be ({n}, {self.response_length}), "
                f"got {tuple(self.completion_mask.shape)}"
            )

    @property
    def num_responses(self) -> int:
        return self.sequences.shape[0]

    @property
    def response_length(self) -> int:
        return self.sequences.shape[1] - self.prompt_length

    @property
    def n_t(self) -> int:
        return self.draws.n_t

    def select(self, rows: torch.Tensor) -> RolloutBatch:
        """The sub-batch of responses ``rows`` (a mini-batch for an off-policy update)."""
        cm = None if self.completion_mask is None else self.completion_mask[rows]
        return replace(
            self,
            sequences=self.sequences[rows],
            attention_mask=self.attention_mask[rows],
            advantages=self.advantages[rows],
            draws=self.draws.select(rows),
            completion_mask=cm,
        )

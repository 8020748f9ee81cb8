"""Evaluation: greedy completions from the shared sampler, scored by the task's own reward.

The sampler is the one rollouts use (:mod:`bgpo.sampler`) and the metric is the task's reward
function (:meth:`bgpo.tasks.Task.metrics`), so evaluation and training can never disagree on
how a completion is produced or scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from bgpo.sampler import Generation, SamplerConfig, decode_completions, generate, left_pad


def encode_prompts(tokenizer, prompts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and attention mask ``(B, P)`` on ``device``."""
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if any(not x for x in ids):
        raise ValueError("a prompt encodes to zero tokens")
    padded, mask = left_pad(ids, tokenizer.pad_token_id)
    return padded.to(device), mask.to(device)


def complete(
    model, tokenizer, prompts: Sequence[str], config: SamplerConfig,
    generator: torch.Generator | None = None,
) -> tuple[Generation, list[str]]:
    """Sample completions of ``prompts``; return the generation and the decoded texts."""
    device = next(model.parameters()).device
    ids, mask = encode_prompts(tokenizer, prompts, device)
    gen = generate(model, ids, mask, config, generator=generator)
    return gen, decode_completions(tokenizer, gen)


def evaluate(
    model, tokenizer, task, examples: Sequence[dict[str, Any]], config: SamplerConfig,
    batch_size: int = 64, progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Accuracy and mean reward of greedy completions on ``examples``, plus the samples."""
    if config.temperature != 0:
        raise ValueError("evaluation decodes greedily: sampler temperature must be 0")
    if not examples:
        raise ValueError("evaluation needs at least one example")
    completions: list[str] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        _, texts = complete(model, tokenizer, [e["prompt"] for e in chunk], config)
        completions += texts
        if progress is not None:
            progress(len(completions), len(examples))
    rewards = task.score(examples, completions)
    result = task.metrics(rewards)
    result["n"] = len(examples)
    result["samples"] = [
        {"prompt": e["prompt"], "completion": c, "reward": r}
        for e, c, r in zip(examples, completions, rewards, strict=True)
    ]
    return result

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


def encode_prompts(
    tokenizer, prompts: Sequence[str], device, chat_template: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and attention mask ``(B, P)`` on ``device``.

    With ``chat_template`` each prompt becomes one user turn of the tokenizer's chat template
    followed by the assistant prefix (instruct models such as LLaDA-8B-Instruct expect it).
    """
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("model.chat_template is set but the tokenizer has no chat template")
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if any(not x for x in ids):
        raise ValueError("a prompt encodes to zero tokens")
    padded, mask = left_pad(ids, tokenizer.pad_token_id)
    return padded.to(device), mask.to(device)


def complete(
    model, tokenizer, prompts: Sequence[str], config: SamplerConfig,
    generator: torch.Generator | None = None, chat_template: bool = False,
) -> tuple[Generation, list[str]]:
    """Sample completions of ``prompts``; return the generation and the decoded texts."""
    device = next(model.parameters()).device
    ids, mask = encode_prompts(tokenizer, prompts, device, chat_template)
    gen = generate(model, ids, mask, config, generator=generator)
    return gen, decode_completions(tokenizer, gen)


def evaluate(
    model, tokenizer, task, examples: Sequence[dict[str, Any]], config: SamplerConfig,
    batch_size: int = 64, progress: Callable[[int, int], None] | None = None,
    chat_template: bool = False,
) -> dict[str, Any]:
    """Accuracy and mean reward of greedy completions on ``examples``, plus the samples."""
    if config.temperature != 0:
        raise ValueError("evaluation decodes greedily: sampler temperature must be 0")
    completions = _complete_batched(model, tokenizer, examples, config, None, batch_size, chat_template,
                                    progress)
    rewards = task.score(examples, completions)
    result = task.metrics(rewards)
    result["n"] = len(examples)
    result["samples"] = [
        {"prompt": e["prompt"], "completion": c, "reward": r}
        for e, c, r in zip(examples, completions, rewards, strict=True)
    ]
    return result


def sample_evaluate(
    model, tokenizer, task, examples: Sequence[dict[str, Any]], config: SamplerConfig, k: int,
    generator: torch.Generator, batch_size: int = 64, chat_template: bool = False,
) -> dict[str, Any]:
    """Sampled accuracy: ``k`` completions per example at ``config.temperature``.

    Returns ``accuracy`` (share of all ``n·k`` completions that are correct), ``pass@k`` (share of
    examples solved at least once), the mean ``reward``, ``n``, ``k`` and the ``(n, k)`` rewards.
    """
    if config.temperature <= 0:
        raise ValueError("sampled evaluation needs a temperature > 0 (use evaluate for greedy)")
    if k < 1:
        raise ValueError(f"samples per example must be at least 1, got {k}")
    repeated = [e for e in examples for _ in range(k)]
    completions = _complete_batched(model, tokenizer, repeated, config, generator, batch_size, chat_template)
    rewards = task.score(repeated, completions)
    per_example = [rewards[i * k:(i + 1) * k] for i in range(len(examples))]
    correct = [[task.is_correct(r) for r in row] for row in per_example]
    return {
        "accuracy": sum(map(sum, correct)) / len(repeated),
        f"pass@{k}": sum(any(row) for row in correct) / len(examples),
        "reward": sum(rewards) / len(rewards),
        "n": len(examples),
        "k": k,
        "rewards": per_example,
    }


def _complete_batched(model, tokenizer, examples, config, generator, batch_size, chat_template,
                      progress=None) -> list[str]:
    """Completions of every example's prompt, ``batch_size`` prompts per sampler call."""
    if not examples:
        raise ValueError("evaluation needs at least one example")
    completions: list[str] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        _, texts = complete(model, tokenizer, [e["prompt"] for e in chunk], config, generator,
                            chat_template=chat_template)
        completions += texts
        if progress is not None:
            progress(len(completions), len(examples))
    return completions

"""Tasks: data, prompts and the reward that is also the evaluation metric.

Built-in tasks are ``countdown`` and ``sudoku`` (4×4), each with a seeded generator whose
train and test splits never share a puzzle, loaders for d1's released files, and two prompt
styles: ``d1`` (reason in ``<reasoning>`` tags, answer in ``<answer>`` tags) and ``compact``
(a short prompt for tiny character-level models; see :data:`CHARSET`). A user reward function
with TRL's signature can replace a task's reward (:func:`get_task` with ``reward=``).

Departure from the reference: d1 keeps one script per task with its own reward copy for
training and another for evaluation; here one function serves both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from bgpo.tasks.base import (
    CHARSET,
    PROMPT_STYLES,
    CustomRewardTask,
    RewardFn,
    Task,
    TaskDataError,
    load_reward_fn,
    read_rows,
)
from bgpo.tasks.countdown import Countdown
from bgpo.tasks.sudoku import Sudoku

TASKS: dict[str, type[Task]] = {"countdown": Countdown, "sudoku": Sudoku}

__all__ = [
    "CHARSET",
    "PROMPT_STYLES",
    "TASKS",
    "Countdown",
    "CustomRewardTask",
    "RewardFn",
    "Sudoku",
    "Task",
    "TaskDataError",
    "get_task",
    "load_examples",
    "load_reward_fn",
]


def get_task(name: str, reward: str | Callable[..., Any] | None = None, **options: Any) -> Task:
    """The task ``name`` built with ``options``; ``reward`` (a callable or a
    ``"module:function"`` / ``"file.py:function"`` string) replaces its reward."""
    cls = TASKS.get(name)
    if cls is None:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(sorted(TASKS))}")
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for task {name!r}; valid: {', '.join(valid)}"
        )
    task = cls(**options)
    if reward is None:
        return task
    if isinstance(reward, str):
        reward = load_reward_fn(reward)
    elif not isinstance(reward, RewardFn):
        reward = RewardFn(reward)
    return CustomRewardTask(task, reward)


def load_examples(path: str | Path, task: str | Task, limit: int | None = None) -> list[dict]:
    """Examples (with prompts) read from a CSV or JSONL file in d1's or our column names.

    A malformed row raises :class:`TaskDataError` naming the file and line.
    """
    task = get_task(task) if isinstance(task, str) else task
    out: list[dict] = []
    for line, row in read_rows(path):
        try:
            example = task.from_row(row)
        except (ValueError, TypeError) as err:
            raise TaskDataError(f"{path}:{line}: {err}") from None
        out.append(task.with_prompt(example))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise TaskDataError(f"{path}: no {task.name} rows")
    return out

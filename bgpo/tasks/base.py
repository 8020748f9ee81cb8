"""What every task provides, user reward functions, and reading task files.

A :class:`Task` makes prompts (generated with a seed, or read from a CSV / JSONL file) and
scores completions with one reward function whose signature is TRL's
(``prompts, completions, **columns -> list[float]``). Its evaluation metric is derived from
that same reward (:meth:`Task.is_correct`), so training and evaluation cannot disagree.

Departures from the reference (d1): train/test membership of a generated puzzle is decided by
a hash of the puzzle itself, so the two splits can never share a puzzle whatever the seeds;
completions may be plain strings or TRL-style chat messages; a user reward function's output
is checked (length, finite floats) instead of trusted.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import importlib.util
import json
import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

PROMPT_STYLES = ("d1", "compact")
SPLITS = ("train", "test")
# Every character a compact prompt or a compact answer can contain (a tokenizer for the
# built-in character-level model must cover these).
CHARSET = "0123456789+-*/()=> \n"

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class TaskDataError(ValueError):
    """A task file or row is malformed; the message names the file and line."""


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or TRL's chat form (the last message's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"a completion must be a string or a list of chat messages, got {completion!r}")


def extract_answer(text: str, prompt_style: str, first_line: bool = False) -> str | None:
    """The answer a completion gives, or None if it gives none.

    The content of the last ``<answer>…</answer>`` wins in both styles. Without the tags a
    ``d1`` completion has no answer, while a ``compact`` completion *is* the answer (stripped;
    only its first line with ``first_line``).
    """
    matches = _ANSWER.findall(text)
    if matches:
        return matches[-1].strip()
    if prompt_style != "compact":
        return None
    text = text.strip()
    return text.splitlines()[0].strip() if first_line and text else text


def d1_format(answer_hint: str) -> str:
    """The d1-style instruction to reason, then answer inside tags."""
    return (
        "Write your working inside <reasoning> and </reasoning>, then give only the final "
        "answer inside <answer> and </answer>, like this:\n"
        f"<reasoning>\n...\n</reasoning>\n<answer>\n{answer_hint}\n</answer>"
    )


def split_of(key: str, test_fraction: float) -> str:
    """``"test"`` for a fraction ``test_fraction`` of keys, ``"train"`` for the rest, by hash."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def row_field(row: Mapping[str, Any], *names: str) -> Any:
    """The value of the first of ``names`` present in ``row`` (case-insensitive)."""
    lowered = {str(k).lower(): v for k, v in row.items() if k is not None}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None and value != "":
            return value
    raise ValueError(f"missing column {' / '.join(map(repr, names))} (row has {sorted(lowered)})")


class Task(ABC):
    """A task: seeded examples, a prompt per example, a reward that is also the metric.

    Subclasses set ``name``, ``columns`` (the data columns the reward reads) and implement
    the abstract methods; they hold ``prompt_style`` and ``test_fraction`` as fields.
    """

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    prompt_style: str
    test_fraction: float

    @abstractmethod
    def generate(self, rng: random.Random) -> dict[str, Any]:
        """One random puzzle (its data columns, no prompt)."""

    @abstractmethod
    def canonical(self, example: Mapping[str, Any]) -> str:
        """A string that identifies the puzzle (equal puzzles give equal strings)."""

    @abstractmethod
    def prompt(self, example: Mapping[str, Any]) -> str:
        """The prompt text for ``example`` in this task's prompt style."""

    @abstractmethod
    def from_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Data columns from one file row; raises ``ValueError`` saying what is wrong."""

    @abstractmethod
    def score_one(self, completion: str, **example: Any) -> float:
        """Reward of one completion text given that example's columns."""

    def check_common(self) -> None:
        """Check option types and the fields every task has (call from ``__post_init__``)."""
        for f in fields(self):  # type: ignore[arg-type]
            expected = {"int": int, "float": (int, float), "str": str}.get(str(f.type))
            value = getattr(self, f.name)
            if expected and (isinstance(value, bool) or not isinstance(value, expected)):
                raise ValueError(f"{self.name}: option {f.name} must be {f.type}, got {value!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"{self.name}: prompt_style {self.prompt_style!r} is not one of {PROMPT_STYLES}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"{self.name}: test_fraction must be in (0, 1), got {self.test_fraction}")

    def with_prompt(self, example: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": self.prompt(example), **example}

    def examples(self, split: str, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` distinct puzzles of ``split``, deterministic in ``seed`` (a longer list extends
        a shorter one); raises ``ValueError`` if the options admit fewer distinct puzzles."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{self.name}: number of examples must be an integer >= 0, got {n!r}")
        if split not in SPLITS:
            raise ValueError(f"{self.name}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
        rng = random.Random(f"bgpo:{self.name}:{split}:{seed}")
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        # Give up after this many draws in a row without a new puzzle of this split.
        misses, budget = 0, 1000 + int(200 / min(self.test_fraction, 1 - self.test_fraction))
        while len(out) < n:
            example = self.generate(rng)
            key = self.canonical(example)
            if key in seen or split_of(f"{self.name}:{key}", self.test_fraction) != split:
                misses += 1
                if misses > budget:
                    raise ValueError(
                        f"{self.name}: found only {len(out)} distinct {split} puzzles of the "
                        f"{n} asked for with these options; widen the ranges or ask for fewer"
                    )
                continue
            seen.add(key)
            misses = 0
            out.append(self.with_prompt(example))
        return out

    def reward(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        """TRL-signature reward: ``columns`` are lists aligned with ``completions``."""
        n = len(completions)
        data = {}
        for name in self.columns:
            if name not in columns:
                raise ValueError(f"{self.name} reward needs column {name!r}; got {sorted(columns)}")
            if len(columns[name]) != n:
                raise ValueError(
                    f"{self.name} reward: column {name!r} has {len(columns[name])} entries "
                    f"for {n} completions"
                )
            data[name] = columns[name]
        return [
            self.score_one(completion_text(c), **{k: v[i] for k, v in data.items()})
            for i, c in enumerate(completions)
        ]

    def is_correct(self, reward: float) -> bool:
        """The evaluation metric: a completion counts as solved when its reward is full."""
        return reward >= 1.0 - 1e-9

    def metrics(self, rewards: Sequence[float]) -> dict[str, float]:
        """Mean reward and accuracy (fraction of :meth:`is_correct`) of a list of rewards."""
        if not rewards:
            return {"reward": float("nan"), "accuracy": float("nan")}
        return {
            "reward": sum(rewards) / len(rewards),
            "accuracy": sum(map(self.is_correct, rewards)) / len(rewards),
        }

    def score(self, examples: Sequence[Mapping[str, Any]], completions: Sequence[Any]) -> list[float]:
        """Reward of each completion against the example at the same index; like TRL, the
        reward receives every column the examples share (``prompt`` apart)."""
        if len(examples) != len(completions):
            raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
        shared = set.intersection(*(set(e) for e in examples)) if examples else set()
        columns = {k: [e[k] for e in examples] for k in sorted(shared - {"prompt"})}
        return self.reward([e.get("prompt", "") for e in examples], completions, **columns)


class RewardFn:
    """A user reward function with TRL's signature, its output checked on every call."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None):
        if not callable(fn):
            raise TypeError(f"reward function must be callable, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", repr(fn))

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        out = self.fn(prompts=prompts, completions=completions, **columns)
        n = len(completions)
        if isinstance(out, (str, bytes, Mapping)) or not hasattr(out, "__len__"):
            raise ValueError(
                f"reward function {self.name} returned {type(out).__name__}; expected a list of {n} floats"
            )
        if len(out) != n:
            raise ValueError(f"reward function {self.name} returned {len(out)} values for {n} completions")
        values = []
        for i, value in enumerate(out):
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(
                    f"reward function {self.name} returned {out[i]!r} at index {i}; expected a finite float"
                )
            values.append(value)
        return values


def load_reward_fn(spec: str) -> RewardFn:
    """Import ``"package.module:function"`` or ``"path/to/file.py:function"`` as a RewardFn."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"reward function {spec!r}: expected 'module:function' or 'file.py:function'")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ValueError(f"reward function {spec!r}: no such file {module_name}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)  # type: ignore[arg-type]
            loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"reward function {spec!r}: cannot import {module_name}: {err}") from err
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"reward function {spec!r}: {module_name} has no function {attr!r}")
    return RewardFn(fn, name=spec)


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` from a CSV (header row) or JSON Lines file."""
    path = Path(path)
    if not path.is_file():
        raise TaskDataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            for row in reader:
                if None in row:
                    raise TaskDataError(f"{path}:{reader.line_num}: more fields than the header has")
                yield reader.line_num, row
        elif suffix in (".jsonl", ".json"):
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise TaskDataError(
                        f"{path}:{number}: not JSON ({err.msg}); expected one JSON object per line"
                    ) from err
                if not isinstance(row, dict):
                    raise TaskDataError(f"{path}:{number}: expected a JSON object, got {line.strip()[:60]}")
                yield number, row
        else:
            raise TaskDataError(f"{path}: unsupported file type {suffix!r}; expected .csv or .jsonl")


class CustomRewardTask(Task):
    """A task's data and prompts scored by a user :class:`RewardFn` (metric: reward ≥ 1)."""

    def __init__(self, base: Task, reward_fn: RewardFn):
        self.base, self.reward_fn = base, reward_fn
        self.name = base.name  # type: ignore[misc]
        self.columns = base.columns  # type: ignore[misc]
        self.prompt_style, self.test_fraction = base.prompt_style, base.test_fraction

    def generate(self, rng: random.Random) -> dict[str, Any]:
        return self.base.generate(rng)

    def canonical(self, example: Mapping[str, Any]) -> str:
        return self.base.canonical(example)

    def prompt(self, example: Mapping[str, Any]) -> str:
        return self.base.prompt(example)

    def from_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return self.base.from_row(row)

    def score_one(self, completion: str, **example: Any) -> float:
        return self.reward([""], [completion], **{k: [v] for k, v in example.items()})[0]

    def reward(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        return self.reward_fn(prompts, completions, **columns)

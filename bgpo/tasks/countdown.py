"""Countdown: combine 3–4 given numbers with + - * / into an equation that hits a target.

Data: a seeded generator (numbers drawn from a range, the target built from a random
expression tree over all of them, so every puzzle is solvable), or d1's files read by path
(``nums``/``numbers``/``input`` and ``target``/``output`` columns). Reward, following
ALGORITHM §7 / d1: 1.0 for a correct equation, 0.1 for an equation that is present but wrong,
0.0 for none. The same reward gives the accuracy metric (reward == 1).

Departures from d1's checker, all deliberate:

- Arithmetic goes through :mod:`bgpo.tasks.arith`, never ``eval``; values are exact
  fractions. Non-integer intermediate results are allowed (``(1/3)*3`` is exactly 1, as
  with d1's real division, but without its 1e-5 tolerance).
- An answer that is not an equation of integers, + - * / and parentheses (words, decimals,
  ``**``, an unbalanced bracket) scores 0.0 — d1 gives such text 0.1.
- ``expr = N`` is accepted when N is an integer equal to the target; a different N is a wrong
  (0.1) answer; any other use of ``=`` is unparsable (0.0).
- A parsable equation that divides by zero is "present but wrong": 0.1.
- The numbers must be used exactly once each, compared as multisets (as in d1).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations
from typing import Any, ClassVar

from bgpo.tasks.arith import BinOp, Node, Num, ParseError, evaluate, literals, parse, to_text
from bgpo.tasks.base import Task, d1_format, extract_answer, row_field

FULL, PRESENT = 1.0, 0.1
MAX_OPERANDS = 6  # generation and the brute-force solver grow fast beyond this

_RHS = re.compile(r"\s*(-?)\s*([0-9]+)\s*")


def parse_equation(answer: str) -> tuple[Node, int | None]:
    """The expression of ``expr`` or ``expr = N``, and N (None if absent)."""
    lhs, eq, rhs = answer.partition("=")
    if not eq:
        return parse(lhs), None
    match = _RHS.fullmatch(rhs)
    if match is None:
        raise ParseError(f"right-hand side {rhs.strip()!r} is not an integer")
    return parse(lhs), int(match.group(1) + match.group(2))


def countdown_reward(answer: str | None, numbers: list[int], target: int) -> float:
    """1.0 correct, 0.1 equation present but wrong, 0.0 no (parsable) equation."""
    if answer is None:
        return 0.0
    try:
        node, claimed = parse_equation(answer)
    except ParseError:
        return 0.0
    if sorted(literals(node)) != sorted(int(x) for x in numbers):
        return PRESENT
    if claimed is not None and claimed != int(target):
        return PRESENT
    try:
        value = evaluate(node)
    except ZeroDivisionError:
        return PRESENT
    return FULL if value == int(target) else PRESENT


def _combine(a: Fraction, na: Node, b: Fraction, nb: Node):
    """Every value reachable from two operands in one step, with its expression."""
    yield a + b, BinOp("+", na, nb)
    yield a * b, BinOp("*", na, nb)
    yield a - b, BinOp("-", na, nb)
    yield b - a, BinOp("-", nb, na)
    if b != 0:
        yield a / b, BinOp("/", na, nb)
    if a != 0:
        yield b / a, BinOp("/", nb, na)


def solve(numbers: list[int], target: int) -> str | None:
    """One equation using every number once that equals ``target`` (exact, rational
    intermediates allowed), or None when there is none. Brute force over combination orders."""
    goal = Fraction(target)
    dead: set[tuple[Fraction, ...]] = set()

    def search(pool: list[tuple[Fraction, Node]]) -> Node | None:
        if len(pool) == 1:
            return pool[0][1] if pool[0][0] == goal else None
        key = tuple(sorted(v for v, _ in pool))
        if key in dead:
            return None
        for i, j in combinations(range(len(pool)), 2):
            rest = [p for k, p in enumerate(pool) if k not in (i, j)]
            for value, node in _combine(*pool[i], *pool[j]):
                found = search(rest + [(value, node)])
                if found is not None:
                    return found
        dead.add(key)
        return None

    if not numbers:
        return None
    found = search([(Fraction(n), Num(n)) for n in numbers])
    return None if found is None else to_text(found)


def _random_tree(numbers: list[int], rng: random.Random) -> tuple[int, Node] | None:
    """Combine all numbers in a random order with random operators, keeping every
    intermediate a non-negative integer; None when a division is not exact."""
    pool: list[tuple[int, Node]] = [(n, Num(n)) for n in numbers]
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        (a, na), (b, nb) = pool[i], pool[j]
        op = rng.choice("+-*/")
        if op in "-/" and a < b:
            (a, na), (b, nb) = (b, nb), (a, na)
        if op == "/" and (b == 0 or a % b):
            return None
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // max(b, 1)}[op]
        pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [(value, BinOp(op, na, nb))]
    return pool[0]


def _int_list(value: Any) -> list[int]:
    """Numbers from a list, or from text such as ``"3,5,7"`` / ``"[3, 5, 7]"`` / ``"3 5 7"``."""
    if isinstance(value, str):
        if not re.fullmatch(r"[\[\]\s,0-9-]*", value):
            raise ValueError(f"numbers {value!r} are not a list of integers")
        value = re.findall(r"-?[0-9]+", value)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"numbers {value!r} are not a list of integers")
    return [_int(x, "number") for x in value]


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{what} {value!r} is not an integer")
    try:
        return int(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is not an integer") from None


@dataclass
class Countdown(Task):
    """Countdown puzzles with ``min_numbers``–``max_numbers`` numbers in
    [``min_value``, ``max_value``] and a reachable target in [``min_target``, ``max_target``]."""

    name: ClassVar[str] = "countdown"
    columns: ClassVar[tuple[str, ...]] = ("numbers", "target")

    prompt_style: str = "d1"  # "d1" (<reasoning>/<answer> tags) or "compact" ("3 5 7>22=")
    min_numbers: int = 3  # fewest numbers per puzzle
    max_numbers: int = 4  # most numbers per puzzle (d1: 3–4)
    min_value: int = 1  # smallest number drawn
    max_value: int = 99  # largest number drawn (1–9 or 1–20 suit tiny models)
    min_target: int = 1  # smallest target kept
    max_target: int = 100  # largest target kept
    test_fraction: float = 0.1  # share of all puzzles that belong to the test split

    def __post_init__(self) -> None:
        self.check_common()
        if not 2 <= self.min_numbers <= self.max_numbers <= MAX_OPERANDS:
            raise ValueError(
                f"countdown: need 2 <= min_numbers <= max_numbers <= {MAX_OPERANDS}, "
                f"got {self.min_numbers}, {self.max_numbers}"
            )
        if not 1 <= self.min_value <= self.max_value:
            raise ValueError(
                f"countdown: need 1 <= min_value <= max_value, got {self.min_value}, {self.max_value}"
            )
        if not 1 <= self.min_target <= self.max_target:
            raise ValueError(
                f"countdown: need 1 <= min_target <= max_target, got {self.min_target}, {self.max_target}"
            )

    def generate(self, rng: random.Random) -> dict[str, Any]:
        for _ in range(1000):
            k = rng.randint(self.min_numbers, self.max_numbers)
            numbers = [rng.randint(self.min_value, self.max_value) for _ in range(k)]
            for _ in range(20):
                built = _random_tree(numbers, rng)
                if built is not None and self.min_target <= built[0] <= self.max_target:
                    return {"numbers": numbers, "target": built[0], "solution": to_text(built[1])}
        raise ValueError(
            "countdown: no target in [min_target, max_target] is reachable; widen the target or value range"
        )

    def canonical(self, example: dict[str, Any]) -> str:
        numbers = ",".join(map(str, sorted(example["numbers"])))
        return f"{numbers}>{example['target']}"

    def prompt(self, example: dict[str, Any]) -> str:
        numbers, target = list(example["numbers"]), example["target"]
        if self.prompt_style == "compact":
            return f"{' '.join(map(str, numbers))}>{target}="
        return (
            f"Using the numbers {numbers}, write an equation whose value is {target}. "
            "You may use +, -, * and / and parentheses, and every number must appear exactly "
            "once.\n" + d1_format("an equation such as (1 + 2) * 3")
        )

    def from_row(self, row: dict[str, Any]) -> dict[str, Any]:
        numbers = _int_list(row_field(row, "numbers", "nums", "input"))
        if len(numbers) < 2:
            raise ValueError(f"need at least 2 numbers, got {numbers}")
        return {"numbers": numbers, "target": _int(row_field(row, "target", "output"), "target")}

    def score_one(self, completion: str, **example: Any) -> float:
        answer = extract_answer(completion, self.prompt_style, first_line=True)
        return countdown_reward(answer, example["numbers"], example["target"])

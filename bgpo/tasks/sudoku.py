"""4×4 Sudoku (2×2 boxes): puzzles with a unique solution, scored cell by cell.

A grid is a 16-character string read row by row, ``'0'`` for an empty cell. Data: a seeded
generator, or d1's CSV files read by path (``Puzzle``/``Solution`` columns). Reward, following
ALGORITHM §7 / d1: the fraction of the puzzle's empty cells that the answer fills correctly;
the accuracy metric is the same reward equal to 1 (fully solved).

Answer extraction: the content of ``<answer>…</answer>`` (d1 style) or the bare completion
(compact style); every character that is not a digit is dropped (so a grid written with
spaces, bars or newlines reads the same) and the first 16 digits are the grid. Fewer than 16
digits — a grid of the wrong size — scores 0. Given cells are never scored, so changing them
neither adds nor costs credit.

Departures from the reference: d1 ships fixed puzzle files; here the generator picks a
uniformly random full grid among all 288 valid ones (enumerated once), then empties cells
in random order, keeping each removal only while the solution stays unique, down to a drawn
number of empty cells. Train/test membership is decided by a hash of the puzzle.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from bgpo.tasks.base import Task, d1_format, extract_answer, row_field

SIZE = 16
DIGITS = "1234"
MAX_EMPTY = 12  # a uniquely solvable 4×4 puzzle keeps at least 4 clues


def _units() -> list[tuple[int, ...]]:
    rows = [tuple(range(r * 4, r * 4 + 4)) for r in range(4)]
    cols = [tuple(range(c, SIZE, 4)) for c in range(4)]
    boxes = [
        tuple((br + r) * 4 + bc + c for r in range(2) for c in range(2)) for br in (0, 2) for bc in (0, 2)
    ]
    return rows + cols + boxes


UNITS = _units()
PEERS = [frozenset(j for unit in UNITS if i in unit for j in unit if j != i) for i in range(SIZE)]


def _candidates(grid: list[str], i: int) -> list[str]:
    used = {grid[j] for j in PEERS[i]}
    return [d for d in DIGITS if d not in used]


def _search(grid: list[str], limit: int, found: list[str]) -> None:
    """Depth-first search filling the most constrained empty cell first."""
    empty = [i for i in range(SIZE) if grid[i] == "0"]
    if not empty:
        found.append("".join(grid))
        return
    options = {i: _candidates(grid, i) for i in empty}
    cell = min(empty, key=lambda i: len(options[i]))
    for digit in options[cell]:
        grid[cell] = digit
        _search(grid, limit, found)
        if len(found) >= limit:
            break
    grid[cell] = "0"


def solutions(puzzle: str, limit: int = 2) -> list[str]:
    """Up to ``limit`` solutions of ``puzzle`` (clashing givens give none)."""
    grid = list(puzzle)
    for i in range(SIZE):
        if grid[i] != "0" and grid[i] in {grid[j] for j in PEERS[i]}:
            return []
    found: list[str] = []
    _search(grid, limit, found)
    return found


def count_solutions(puzzle: str, limit: int = 2) -> int:
    """Number of solutions of ``puzzle``, counting no further than ``limit``."""
    return len(solutions(puzzle, limit))


def solve(puzzle: str) -> str | None:
    """The solution of ``puzzle`` if it has exactly one, else None."""
    found = solutions(puzzle, limit=2)
    return found[0] if len(found) == 1 else None


@lru_cache(maxsize=1)
def all_grids() -> tuple[str, ...]:
    """Every valid full 4×4 grid (there are 288)."""
    return tuple(solutions("0" * SIZE, limit=10_000))


def is_valid_grid(grid: str) -> bool:
    """True when ``grid`` is a complete grid with 1–4 once in every row, column and box."""
    return len(grid) == SIZE and all(sorted(grid[i] for i in unit) == list(DIGITS) for unit in UNITS)


def sudoku_reward(answer: str | None, puzzle: str, solution: str) -> float:
    """Fraction of the empty cells of ``puzzle`` that ``answer`` fills as in ``solution``."""
    if answer is None:
        return 0.0
    digits = re.sub(r"[^0-9]", "", answer)
    if len(digits) < SIZE:
        return 0.0
    digits = digits[:SIZE]
    empty = [i for i, ch in enumerate(puzzle) if ch == "0"]
    if not empty:
        return 1.0 if digits == solution else 0.0
    return sum(digits[i] == solution[i] for i in empty) / len(empty)


def check_pair(puzzle: str, solution: str) -> None:
    """Raise ``ValueError`` unless ``puzzle``/``solution`` form a well-formed 4×4 pair."""
    if not re.fullmatch(r"[0-4]{16}", puzzle):
        raise ValueError(f"puzzle {puzzle!r} is not 16 digits 0-4")
    if not re.fullmatch(r"[1-4]{16}", solution) or not is_valid_grid(solution):
        raise ValueError(f"solution {solution!r} is not a valid full 4x4 grid")
    if any(p != "0" and p != s for p, s in zip(puzzle, solution, strict=True)):
        raise ValueError(f"solution {solution!r} contradicts the givens of puzzle {puzzle!r}")
    if "0" not in puzzle:
        raise ValueError(f"puzzle {puzzle!r} has no empty cell")


def _dig(solution: str, n_empty: int, rng: random.Random) -> str | None:
    """Empty ``n_empty`` cells of ``solution`` keeping a unique solution, or None."""
    grid = list(solution)
    order = list(range(SIZE))
    rng.shuffle(order)
    removed = 0
    for i in order:
        if removed == n_empty:
            break
        grid[i] = "0"
        if count_solutions("".join(grid)) == 1:
            removed += 1
        else:
            grid[i] = solution[i]
    return "".join(grid) if removed == n_empty else None


@dataclass
class Sudoku(Task):
    """4×4 Sudoku puzzles with a unique solution and ``min_empty``–``max_empty`` empty cells."""

    name: ClassVar[str] = "sudoku"
    columns: ClassVar[tuple[str, ...]] = ("puzzle", "solution")

    prompt_style: str = "d1"  # "d1" (<reasoning>/<answer> tags) or "compact" ("1200…0003>")
    min_empty: int = 4  # fewest empty cells per puzzle
    max_empty: int = 10  # most empty cells per puzzle (at most 12)
    test_fraction: float = 0.1  # share of all puzzles that belong to the test split

    def __post_init__(self) -> None:
        self.check_common()
        if not 1 <= self.min_empty <= self.max_empty <= MAX_EMPTY:
            raise ValueError(
                f"sudoku: need 1 <= min_empty <= max_empty <= {MAX_EMPTY}, "
                f"got {self.min_empty}, {self.max_empty}"
            )

    def generate(self, rng: random.Random) -> dict[str, Any]:
        for _ in range(10_000):
            solution = rng.choice(all_grids())
            puzzle = _dig(solution, rng.randint(self.min_empty, self.max_empty), rng)
            if puzzle is not None:
                return {"puzzle": puzzle, "solution": solution}
        raise ValueError(f"sudoku: could not reach {self.max_empty} empty cells; lower max_empty")

    def canonical(self, example: dict[str, Any]) -> str:
        return str(example["puzzle"])

    def prompt(self, example: dict[str, Any]) -> str:
        puzzle = str(example["puzzle"])
        if self.prompt_style == "compact":
            return f"{puzzle}>"
        rows = "\n".join(puzzle[r * 4 : r * 4 + 4] for r in range(4))
        return (
            "Solve this 4x4 Sudoku. Fill every 0 with a digit from 1 to 4 so that each row, "
            "each column and each of the four 2x2 boxes holds 1, 2, 3 and 4 exactly once.\n"
            f"Puzzle (one row per line, 0 = empty):\n{rows}\n"
            + d1_format("the 16 digits of the solved grid, row by row")
        )

    def from_row(self, row: dict[str, Any]) -> dict[str, Any]:
        puzzle = str(row_field(row, "puzzle")).strip()
        solution = str(row_field(row, "solution")).strip()
        check_pair(puzzle, solution)
        return {"puzzle": puzzle, "solution": solution}

    def score_one(self, completion: str, **example: Any) -> float:
        answer = extract_answer(completion, self.prompt_style)
        return sudoku_reward(answer, str(example["puzzle"]), str(example["solution"]))

"""Build `CodeJob`s from the common code-benchmark formats.

HumanEval-style problems give a prompt (imports, helpers and the signature of the entry
point), a completion, a `check(candidate)` test and the entry point's name. The program is
prompt + completion; the judge runs the prompt itself as trusted setup, so helpers that the
test calls (HumanEval's `poly`, `encode_cyclic`, `encode_shift`) are the dataset's, not
versions the program may have redefined, and only the entry point comes from the program.
MBPP-style problems give a list of assert statements, each checked as its own test.
"""

from __future__ import annotations

from collections.abc import Sequence

from bgpo.sandbox.spec import CodeJob, Limits


def humaneval_job(problem: dict, completion: str, limits: Limits | None = None) -> CodeJob:
    """A job for a HumanEval-format problem (keys prompt, test, entry_point)."""
    entry = problem["entry_point"]
    return CodeJob(
        program=problem["prompt"] + completion,
        tests=(f"{problem['test']}\ncheck({entry})\n",),
        setup=problem["prompt"],
        entry_points=(entry,),
        limits=limits,
    )


def mbpp_job(completion: str, asserts: Sequence[str], setup: str = "",
             limits: Limits | None = None) -> CodeJob:
    """A job for an MBPP-format problem: every assert statement is one test."""
    return CodeJob(program=completion, tests=tuple(asserts), setup=setup, limits=limits)

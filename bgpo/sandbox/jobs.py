"""Build `CodeJob`s from the common code-benchmark formats.

HumanEval-style problems give a prompt (imports, helpers and the signature of the entry
point), a completion, a `check(candidate)` test and the entry point's name. The program is
prompt + completion; the judge runs the prompt itself as trusted setup, so helpers that the
test calls (HumanEval's `poly`, `encode_cyclic`, `encode_shift`) are the dataset's, not
versions the program may have redefined, and only the entry point comes from the program.
MBPP-style problems give a list of assert statements, each checked as its own test.
Standard-input problems (most of DeepCoder's, from contest sites) give input/output pairs:
the program runs once per pair in a fresh process, and its output must match the expected
one token for token (whitespace layout is ignored; numbers are compared as text).
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


_STDIO_SETUP = """
def same_output(actual, expected):
    if actual.split() != expected.split():
        raise AssertionError(f"expected {expected[:200]!r}, got {actual[:200]!r}")
"""


def stdio_job(program: str, cases: Sequence[tuple[str, str]],
              limits: Limits | None = None) -> CodeJob:
    """A job for a standard-input problem: each (stdin, expected stdout) pair is one test."""
    tests = tuple(f"same_output(run_program({stdin!r}), {expected!r})"
                  for stdin, expected in cases)
    return CodeJob(program=program, tests=tests, setup=_STDIO_SETUP,
                   entry_points=("run_program",), limits=limits, stdio=True)

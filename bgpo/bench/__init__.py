"""Benchmarks, each run as ``bgpo bench NAME``; each writes JSON and prints what it measured."""

from __future__ import annotations


def _memory(argv):
    from bgpo.bench.memory import main

    main(argv)


def _sandbox(argv):
    from bgpo.bench.sandbox_throughput import main

    main(argv)


BENCHMARKS = {
    "memory": (_memory, "peak memory of one update step vs n_t, per algorithm"),
    "sandbox": (_sandbox, "HumanEval programs/s through the code sandbox (verdicts checked)"),
}

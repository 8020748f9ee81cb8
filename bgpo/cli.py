"""The ``bgpo`` command line: ``bgpo <command> [options]``; ``bgpo <command> --help`` for each."""

from __future__ import annotations

import argparse
import sys

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, RuntimeError)


def _bench(argv: list[str]) -> None:
    from bgpo.bench import BENCHMARKS

    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        names = ", ".join(BENCHMARKS)
        if argv and argv[0] not in ("-h", "--help"):
            raise ValueError(f"unknown benchmark {argv[0]!r}; valid: {names}")
        print(f"usage: bgpo bench {{{names}}} [options]\n\nbenchmarks:")
        for name, (_, doc) in BENCHMARKS.items():
            print(f"  {name:<10} {doc}")
        return
    BENCHMARKS[argv[0]][0](argv[1:])


COMMANDS = {
    "bench": (_bench, "measure memory and throughput (bgpo bench --help)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="bgpo", description="Memory-efficient RL for diffusion language models (BGPO).")
    parser.add_argument("command", choices=list(COMMANDS), help="; ".join(
        f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    args = parser.parse_args(argv[:1])
    try:
        COMMANDS[args.command][0](argv[1:])
    except USER_ERRORS as exc:
        print(f"bgpo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bgpo {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

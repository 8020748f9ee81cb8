"""The ``bgpo`` command line: ``bgpo <command> [options]``; ``bgpo <command> --help`` for each.

``train`` and ``eval`` take an optional YAML config and ``key=value`` overrides of any field
(``bgpo train --help`` lists them all); ``sft`` works the same way with its own fields.
Bad input ends with a one-line ``bgpo <command>: error: ...`` and exit status 2
(``BGPO_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, RuntimeError, OSError)


def _config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    from bgpo import config as cfglib
    from bgpo.train_config import ALIASES, TrainConfig

    p = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config fields (set as section.field=value, or field=value where unique):\n\n"
        + cfglib.describe(TrainConfig, ALIASES))
    p.add_argument("config", nargs="?", help="YAML config file (see configs/); omitted = defaults")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. algo.n_t=8 train.steps=100")
    return p


def _split_config(args) -> tuple[str | None, list[str]]:
    if args.config is not None and "=" in args.config:
        return None, [args.config, *args.overrides]
    return args.config, args.overrides


def cmd_train(argv: list[str]) -> None:
    p = _config_parser("bgpo train", "RL fine-tuning of a diffusion LM (no arguments: the built-in "
                       "CPU default — the shipped tiny model on Countdown with BGPO, n_t = 16).")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="go on with the run in RUN_DIR from its state.pt, under its config.yaml (a CONFIG "
                        "argument is not allowed then; key=value overrides are, e.g. train.steps=200 to "
                        "train further; the trajectory is exact only if no sampling or update setting "
                        "changes)")
    args = p.parse_args(argv)
    path, overrides = _split_config(args)
    from bgpo.train_config import load_train_config
    from bgpo.trainer import train

    if args.resume is None:
        train(load_train_config(path, overrides))
        return
    if path is not None:
        raise ValueError("--resume takes the run's own config.yaml; give overrides as key=value only")
    config = os.path.join(args.resume, "config.yaml")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"cannot resume: {config} does not exist (not a bgpo train run directory?)")
    train(load_train_config(config, overrides), resume=args.resume)


def cmd_eval(argv: list[str]) -> None:
    p = _config_parser("bgpo eval", "Greedy held-out accuracy of model.path on the configured task "
                       "(same sampler and reward code as training).")
    p.add_argument("--out", help="write the result (accuracy, reward, samples) to this JSON file")
    p.add_argument("--samples", type=int, default=0, metavar="K",
                   help="instead of greedy decoding, sample K completions per puzzle at rollout.temperature "
                        "and report sampled accuracy and pass@K")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (with --samples)")
    args = p.parse_args(argv)
    path, overrides = _split_config(args)
    from dataclasses import replace

    import torch

    from bgpo.evaluate import evaluate, sample_evaluate
    from bgpo.models import load_model
    from bgpo.train_config import load_train_config
    from bgpo.trainer import sampler_configs, task_data

    cfg = load_train_config(path, overrides)
    if args.samples < 0:
        raise ValueError(f"--samples must be >= 0, got {args.samples}")
    model, tokenizer = load_model(cfg.model.path, cfg.model.dtype, cfg.model.device)
    task, _, held_out = task_data(cfg)
    rollout, greedy = sampler_configs(cfg)
    if args.samples:
        config = replace(rollout, steps=greedy.steps)  # evaluation's step count, rollout temperature
        generator = torch.Generator().manual_seed(args.seed)
        result = sample_evaluate(model, tokenizer, task, held_out, config, args.samples, generator,
                                 chat_template=cfg.model.chat_template)
        print(f"{cfg.task.name}: sampled accuracy {result['accuracy']:.4f}  pass@{args.samples} "
              f"{result[f'pass@{args.samples}']:.4f}  reward {result['reward']:.4f}  n={result['n']}  "
              f"T={config.temperature}  model={cfg.model.path}")
    else:
        result = evaluate(model, tokenizer, task, held_out, greedy, chat_template=cfg.model.chat_template)
        print(f"{cfg.task.name}: accuracy {result['accuracy']:.4f}  reward {result['reward']:.4f}  "
              f"n={result['n']}  model={cfg.model.path}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


def cmd_generate(argv: list[str]) -> None:
    from bgpo.train_config import SHIPPED_MODEL

    p = argparse.ArgumentParser(prog="bgpo generate", description="Complete one prompt with the "
                                "diffusion sampler and print the completion.")
    p.add_argument("prompt", help="the prompt text, e.g. '3 5 7>22='")
    p.add_argument("--model", default=SHIPPED_MODEL, help="checkpoint directory or hub id")
    p.add_argument("--gen-length", type=int, default=16, help="response length in tokens")
    p.add_argument("--steps", type=int, default=16, help="diffusion steps")
    p.add_argument("--block-length", type=int, default=16, help="semi-autoregressive block length")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--remasking", default="low_confidence", help="low_confidence or random")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    args = p.parse_args(argv)
    import torch

    from bgpo.evaluate import complete
    from bgpo.models import load_model
    from bgpo.sampler import SamplerConfig

    model, tokenizer = load_model(args.model, device=args.device)
    cfg = SamplerConfig(args.gen_length, args.steps, args.block_length, args.temperature, args.remasking)
    _, texts = complete(model, tokenizer, [args.prompt], cfg, torch.Generator().manual_seed(args.seed))
    print(texts[0])


def cmd_sft(argv: list[str]) -> None:
    from bgpo.sft import main

    main(argv)


def cmd_bench(argv: list[str]) -> None:
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
    "train": (cmd_train, "RL fine-tuning (BGPO and baselines); no arguments = the built-in CPU default"),
    "sft": (cmd_sft, "masked-diffusion supervised fine-tuning (LLaDA's SFT objective)"),
    "eval": (cmd_eval, "greedy held-out accuracy of a checkpoint"),
    "generate": (cmd_generate, "complete one prompt and print the completion"),
    "bench": (cmd_bench, "benchmarks: memory vs n_t, sandbox throughput (bgpo bench --help)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: bgpo <command> [options]   (bgpo <command> --help for each)\n\ncommands:")
        for name, (_, doc) in COMMANDS.items():
            print(f"  {name:<9} {doc}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"bgpo: error: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        COMMANDS[name][0](argv[1:])
    except USER_ERRORS as exc:
        if os.environ.get("BGPO_DEBUG"):
            raise
        print(f"bgpo {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bgpo {name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

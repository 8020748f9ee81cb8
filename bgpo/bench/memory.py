"""Peak memory of one update step versus ``n_t``, per algorithm (ALGORITHM §8).

Each (algorithm, ``n_t``) runs in a fresh Python process, so one measurement cannot inherit
another's allocator state. The worker builds the built-in model at the requested size, a
rollout batch of random responses (memory does not depend on their content), and runs one
:func:`bgpo.update.streaming_update`. Reported: the peak above the loaded model — on CPU the
process's peak resident set (``ru_maxrss``) minus the resident set after the model and batch
were built; on CUDA ``max_memory_allocated`` minus ``memory_allocated`` at the same point.
Gradient buffers are allocated before the baseline is read, as they are in every step after
the first when the trainer zeroes gradients in place: otherwise the ``n_t = 1`` case alone
would see its first backward hand its fresh gradients to ``.grad`` without a second copy, and
the comparison would measure that, not the activations the objectives keep alive.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

WORKER_FLAG = "--worker"


def _worker(args: argparse.Namespace) -> dict:
    import psutil

    from bgpo.algorithms import get_objective
    from bgpo.masking import draw_masks
    from bgpo.models import LLaDAConfig, LLaDAModelLM, resolve_dtype
    from bgpo.rollout import RolloutBatch
    from bgpo.update import streaming_update

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cfg = LLaDAConfig(vocab_size=args.vocab, d_model=args.d_model, n_heads=args.heads,
                      n_layers=args.layers, mlp_hidden_size=args.mlp)
    with device:  # initialise on the target device: an 8B-sized init on the CPU takes minutes
        model = LLaDAModelLM(cfg)
    model = model.to(dtype=resolve_dtype(args.dtype)).train()
    n, total = args.responses, args.prompt_length + args.response_length
    seqs = torch.randint(4, args.vocab, (n, total), generator=g).to(device)
    attn = torch.ones(n, total, dtype=torch.bool, device=device)
    batch = RolloutBatch(seqs, attn, args.prompt_length, torch.ones(n, dtype=torch.float64),
                         draw_masks(n, args.nt, g))
    for p in model.parameters():  # as after a first step with zero_grad(set_to_none=False)
        p.grad = torch.zeros_like(p)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = psutil.Process().memory_info().rss
    start = time.perf_counter()
    metrics = streaming_update(model, get_objective(args.algo), batch, mc_batch_size=args.mc_batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"algo": args.algo, "n_t": args.nt, "device": device.type,
            "peak_above_model_mib": (peak - base) / 2**20, "model_mib": base / 2**20,
            "seconds": time.perf_counter() - start, "tokens": metrics["tokens"]}


def _measure(args: argparse.Namespace, algo: str, n_t: int) -> dict:
    cmd = [sys.executable, "-m", "bgpo.bench.memory", WORKER_FLAG, "--algo", algo, "--nt", str(n_t)]
    for key in ("d_model", "heads", "layers", "mlp", "vocab", "prompt_length", "response_length",
                "responses", "mc_batch_size", "dtype", "device"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    # A fixed mmap threshold makes glibc return every large freed block to the OS at once, so
    # the CPU peak RSS measures live tensors rather than the allocator's heap fragmentation.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker {algo} n_t={n_t} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-.")]
    for k, algo in enumerate(dict.fromkeys(r["algo"] for r in rows)):
        pts = [(r["n_t"], r["peak_above_model_mib"]) for r in rows if r["algo"] == algo]
        marker, line = styles[k % len(styles)]
        ax.plot(*zip(*pts, strict=True), marker=marker, linestyle=line, label=algo, alpha=0.85)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n_t (Monte-Carlo samples per response)")
    ax.set_ylabel(f"peak memory above model (MiB, {rows[0]['device']})")
    ax.set_title("One update step")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", default="bgpo,vrpo", help="comma-separated algorithms")
    p.add_argument("--nt", default="1,2,4,8,16,32", help="comma-separated n_t values")
    p.add_argument("--d-model", type=int, default=512, help="model width")
    p.add_argument("--heads", type=int, default=8, help="attention heads")
    p.add_argument("--layers", type=int, default=8, help="Transformer blocks")
    p.add_argument("--mlp", type=int, default=1376, help="SwiGLU hidden size")
    p.add_argument("--vocab", type=int, default=100, help="vocabulary size")
    p.add_argument("--prompt-length", type=int, default=32, help="prompt tokens P")
    p.add_argument("--response-length", type=int, default=256, help="response tokens L")
    p.add_argument("--responses", type=int, default=1, help="responses in the mini-batch")
    p.add_argument("--mc-batch-size", type=int, default=1, help="MC samples per forward pass")
    p.add_argument("--dtype", default="float32", help="parameter dtype (float32, bfloat16, ...)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out-dir", default="runs/bench-memory", help="where JSON and PNG go")


def run(args: argparse.Namespace) -> list[dict]:
    from bgpo.algorithms import get_objective

    algos = [a.strip() for a in args.algo.split(",") if a.strip()]
    for a in algos:
        get_objective(a)  # unknown names fail before any process starts
    try:
        nts = [int(x) for x in args.nt.split(",")]
    except ValueError:
        raise ValueError(f"--nt must be comma-separated integers, got {args.nt!r}") from None
    if any(x < 1 for x in nts):
        raise ValueError(f"--nt values must be at least 1, got {args.nt!r}")
    rows = []
    for algo in algos:
        for n_t in nts:
            rows.append(_measure(args, algo, n_t))
            r = rows[-1]
            print(f"{algo:>11}  n_t={n_t:<3}  peak above model {r['peak_above_model_mib']:9.1f} MiB"
                  f"  ({r['seconds']:.1f} s)", flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    result = {"config": {k: v for k, v in vars(args).items() if k != "func"}, "rows": rows}
    with open(os.path.join(args.out_dir, "memory.json"), "w") as f:
        json.dump(result, f, indent=2)
    _plot(rows, os.path.join(args.out_dir, "memory.png"))
    print(format_table(rows))
    print(f"wrote {args.out_dir}/memory.json and memory.png")
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table: one row per n_t, one column per algorithm (MiB above the model)."""
    algos = list(dict.fromkeys(r["algo"] for r in rows))
    nts = sorted({r["n_t"] for r in rows})
    cell = {(r["algo"], r["n_t"]): r["peak_above_model_mib"] for r in rows}
    lines = ["| n_t | " + " | ".join(f"{a} (MiB)" for a in algos) + " |",
             "|---|" + "---|" * len(algos)]
    for n in nts:
        vals = [f"{cell[a, n]:.1f}" if (a, n) in cell else "" for a in algos]
        lines.append(f"| {n} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="bgpo bench memory", description=__doc__.split("\n")[0])
    add_arguments(p)
    if WORKER_FLAG in argv:
        argv = [a for a in argv if a != WORKER_FLAG]
        p.set_defaults(algo="bgpo")
        args = p.parse_args(argv)
        args.nt = int(args.nt)
        print(json.dumps(_worker(args)))
        return
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()

"""A training run's directory and its live display.

Layout of ``output_dir``: ``config.yaml`` (resolved config), ``metrics.jsonl`` (one line per
step), ``eval.jsonl`` (one line per evaluation, with sample completions),
``generations.jsonl``, ``curves.png`` (reward and accuracy), ``summary.json`` and
``checkpoint/`` (``save_pretrained`` layout). Files are appended line by line and flushed, and
whole files are written to a temporary name and renamed, so a crash or Ctrl-C never leaves a
half-written file. An existing non-empty ``output_dir`` is never overwritten: the run goes to
``output_dir-2``, ``-3``, ... — except when a run is resumed (``resume_step``): then the run's own
directory is reopened and every record after the resumed step is dropped from the ``.jsonl``
files, so they read as if the run had never stopped.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import sys
import time

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bgpo.config import to_dict


def peak_memory_mib() -> float:
    """Peak accelerator memory if CUDA is in use, else the process's peak resident set."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_dir(path: str) -> str:
    """``path`` if absent or empty, else the first free ``path-N``."""
    candidate, n = path, 1
    while os.path.isdir(candidate) and os.listdir(candidate):
        n += 1
        candidate = f"{path}-{n}"
    os.makedirs(candidate, exist_ok=True)
    return candidate


def write_file_atomic(path: str, write) -> None:
    """Call ``write(tmp)`` on a per-process temporary name beside ``path``, sync it, rename it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a per-process temporary file, synced, then renamed."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    write_file_atomic(path, write)


def save_checkpoint(model, tokenizer, run_dir: str) -> str:
    """``save_pretrained`` model and tokenizer into ``run_dir/checkpoint`` through a temporary
    directory, swapped in only once complete; LoRA adapters are merged into a copy first."""
    from bgpo.models.lora import has_lora, merge_lora

    if has_lora(model):
        model = merge_lora(copy.deepcopy(model))
    final = os.path.join(run_dir, "checkpoint")
    tmp = os.path.join(run_dir, f".checkpoint.tmp-{os.getpid()}")
    old = os.path.join(run_dir, f".checkpoint.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _records_up_to(path: str, step: int) -> list[dict]:
    """The records of a ``.jsonl`` file whose ``step`` is at most ``step`` (a torn last line is dropped)."""
    if not os.path.exists(path):
        return []
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a crash can only be the last one
            if record.get("step", 0) <= step:
                kept.append(record)
    return kept


class RunLog:
    def __init__(self, output_dir: str, cfg, total_steps: int, resume_step: int | None = None):
        self.history: list[dict] = []
        self.evals: list[tuple[int, float]] = []
        if resume_step is None:
            self.dir = fresh_dir(output_dir)
        else:
            self.dir = output_dir
            for name in ("metrics", "eval", "generations"):
                path = os.path.join(self.dir, f"{name}.jsonl")
                kept = _records_up_to(path, resume_step)
                write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
                if name == "metrics":
                    self.history = kept
                elif name == "eval":
                    self.evals = [(r["step"], r["accuracy"]) for r in kept]
        self.total = total_steps
        self.console = Console(stderr=True)
        resolved = to_dict(cfg)
        resolved["train"]["output_dir"] = self.dir  # where the run really went (-2, -3, ... if taken)
        write_atomic(os.path.join(self.dir, "config.yaml"), yaml.safe_dump(resolved, sort_keys=False))
        self._files = {name: open(os.path.join(self.dir, f"{name}.jsonl"), "a")
                       for name in ("metrics", "eval", "generations")}
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<12}"), BarColumn(),
            TextColumn("step {task.completed}/{task.total}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), TextColumn("{task.fields[rate]}"),
            console=self.console, transient=True, disable=not self.console.is_terminal)
        self.task = self.progress.add_task("train", total=total_steps, phase="start", rate="")
        self.progress.start()
        self.started = time.perf_counter()
        self.first_step = (resume_step or 0) + 1
        if resume_step is None:
            self.console.print(f"run directory: {self.dir}")
        else:
            self.console.print(f"resuming {self.dir} after step {resume_step}")

    def _append(self, name: str, record: dict) -> None:
        f = self._files[name]
        f.write(json.dumps(record) + "\n")
        f.flush()

    def phase(self, name: str) -> None:
        self.progress.update(self.task, phase=name)

    def note(self, message: str) -> None:
        self.console.print(message)

    def write_step(self, metrics: dict, prompts, texts, rewards, n_generations: int) -> None:
        self.history.append(metrics)
        self._append("metrics", metrics)
        for p, c, r in list(zip(prompts, texts, rewards, strict=True))[:n_generations]:
            self._append("generations", {"step": metrics["step"], "prompt": p, "completion": c, "reward": r})
        step = metrics["step"]
        elapsed = time.perf_counter() - self.started
        eta = elapsed / (step - self.first_step + 1) * (self.total - step)
        rate = f"{metrics['tokens_per_second']:,.0f} tok/s"
        self.progress.update(self.task, completed=step, rate=rate)
        self.console.print(
            f"step {step}/{self.total}  reward {metrics['reward']:.3f}  acc {metrics['accuracy']:.3f}  "
            f"loss {metrics['loss']:+.4f}  |d| {metrics['d_abs_mean']:.3g}  "
            f"rollout {metrics['time/rollout']:.1f}s  update {metrics['time/update']:.1f}s  "
            f"{rate}  ETA {eta / 60:.1f} min")

    def write_eval(self, step: int, result: dict) -> None:
        self.evals.append((step, result["accuracy"]))
        record = {"step": step, "accuracy": result["accuracy"], "reward": result["reward"], "n": result["n"],
                  "samples": result["samples"][:16]}
        self._append("eval", record)
        self.console.print(f"eval @ step {step}: held-out accuracy {result['accuracy']:.3f} "
                           f"(reward {result['reward']:.3f}, n={result['n']})")

    def save_checkpoint(self, model, tokenizer) -> str:
        return save_checkpoint(model, tokenizer, self.dir)

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.8))
        if self.history:
            steps = [m["step"] for m in self.history]
            ax.plot(steps, [m["reward"] for m in self.history], label="rollout reward", alpha=0.6)
            ax.plot(steps, [m["accuracy"] for m in self.history], label="rollout accuracy", alpha=0.6)
        if self.evals:
            ax.plot(*zip(*self.evals, strict=True), marker="o", label="held-out accuracy (greedy)")
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(self.dir, "curves.png.tmp.png"), dpi=110)
        plt.close(fig)
        os.replace(os.path.join(self.dir, "curves.png.tmp.png"), os.path.join(self.dir, "curves.png"))

    def finish(self, model, tokenizer, summary: dict) -> None:
        self.progress.stop()
        summary = {**summary, "checkpoint": self.save_checkpoint(model, tokenizer), "run_dir": self.dir}
        self.plot()
        write_atomic(os.path.join(self.dir, "summary.json"), json.dumps(summary, indent=2))
        for f in self._files.values():
            f.close()
        before, after = summary.get("accuracy_before"), summary.get("accuracy_after")
        if before is not None and after is not None:
            self.console.print(f"held-out accuracy: before {before:.3f}  after {after:.3f}  "
                               f"({100 * (after - before):+.1f} points)")
        print(json.dumps(summary), file=sys.stdout, flush=True)

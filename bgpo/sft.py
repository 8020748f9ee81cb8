"""Masked-diffusion supervised fine-tuning (``bgpo sft``) and the recipe of the shipped checkpoint.

Objective: LLaDA's SFT loss (Nie et al., "Large Language Diffusion Models", arXiv 2502.09992,
Eq. 5 / Algorithm 2). A training pair is a prompt ``x`` and a response ``y`` of fixed length
``L``: the answer followed by EOS tokens up to ``L`` (the EOS tail is part of the response, as
in LLaDA, so the model learns where an answer ends; the sampler generates into a fixed ``L``
and the reward reads up to the first EOS). Per sequence ``t ~ U(0, 1]``; each response token
is masked independently with probability ``t``; the prompt (left padding included) is never
masked; the loss is the mask-weighted cross-entropy on the masked response tokens.

:func:`run_sft` trains the built-in model (or a checkpoint) on generated Countdown data, with
4x4 Sudoku data mixed in, evaluates held-out Countdown accuracy with the shared greedy sampler
(:func:`bgpo.evaluate.evaluate`), and can stop as soon as that accuracy first enters a window
(``eval.stop_at_accuracy_min``/``max``), to make a deliberately imperfect starting point that RL
can visibly improve. ``configs/sft-countdown-tiny.yaml`` reproduces ``checkpoints/countdown-tiny``,
which is imperfect (15.2% held-out) through its fixed budget (a 0.9 M-parameter model, 6000 steps,
no window) and a planted habit: 35% of its Countdown answers come from a lazy teacher that adds
the numbers in order (``data.lazy_fraction``, :func:`reference_answers`), which RL can unlearn.

Departures from LLaDA: the loss divides by the fixed response length ``L`` rather than by each
answer's own length (all responses here share one ``L``, so this is a constant rescaling); the
optimiser schedule is linear warm-up then cosine decay (or constant); there is no
multi-turn data and no chat template (compact prompts for a character-level model).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from bgpo.config import ConfigError, describe, load, to_dict
from bgpo.elbo import masked_logprob_sums
from bgpo.evaluate import evaluate
from bgpo.models import LLaDAConfig, LLaDAModelLM, char_tokenizer, load_model, special_tokens
from bgpo.runlog import fresh_dir, save_checkpoint, write_atomic
from bgpo.sampler import left_pad
from bgpo.sft_config import (  # noqa: F401  (re-exported: bgpo.sft is the public entry point)
    ALIASES,
    COUNTDOWN_OPTIONS,
    LAZY_TEACHERS,
    SCHEDULES,
    SUDOKU_OPTIONS,
    DataSection,
    EvalSection,
    ModelSection,
    SFTConfig,
    TrainSection,
)
from bgpo.tasks import Task, get_task


def sft_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_length: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """LLaDA's masked-diffusion SFT loss on a batch of (prompt, response) pairs.

    ``input_ids (B, P+L)``: left-padded prompt, then the response (answer + EOS tail);
    ``attention_mask (B, P+L)`` bool, True at real tokens. From ``generator`` (float64, in this
    order): ``t_b = 1 - U[0,1)`` per sequence ``(B,)``, then ``u_bi ~ U[0,1)`` ``(B, L)``;
    response token ``i`` of row ``b`` is masked iff ``u_bi < t_b``. With ``M_b`` its masked set::

        loss = (1/B) Σ_b  (1 / (t_b · L)) · Σ_{i ∈ M_b}  −log p_θ(y_b^i | x_b, y_{b,t})

    Prompt positions, left padding included, are never masked. Returns the scalar loss and
    detached metrics (``loss``, ``t_mean``, ``masked_tokens``, ``nll_per_masked_token``).
    """
    batch, total = input_ids.shape  # B, P+L
    length = total - prompt_length  # L
    if length < 1:
        raise ValueError(f"prompt_length {prompt_length} leaves no response in sequences of length {total}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
        )
    t = 1.0 - torch.rand(batch, generator=generator, dtype=torch.float64)  # (B,) in (0, 1]
    u = torch.rand(batch, length, generator=generator, dtype=torch.float64)  # (B, L)
    masked = (u < t[:, None]) & attention_mask[:, prompt_length:].bool().cpu()  # (B, L) True = masked
    mask_id = special_tokens(model).mask
    logp_sums = masked_logprob_sums(model, input_ids, attention_mask, prompt_length, masked, mask_id)  # (B,)
    t_dev = t.to(device=logp_sums.device, dtype=logp_sums.dtype)
    loss = (-logp_sums / (t_dev * length)).mean()
    n_masked = int(masked.sum())
    metrics = {
        "loss": float(loss.detach()),
        "t_mean": float(t.mean()),
        "masked_tokens": n_masked,
        "nll_per_masked_token": float(-logp_sums.detach().sum()) / max(n_masked, 1),
    }
    return loss, metrics




@dataclass
class Pool:
    """Encoded training pairs of one task: prompt ids and fixed-length responses."""

    prompts: list[list[int]]  # N token lists, unpadded
    responses: torch.Tensor  # (N, L) long: answer ids then EOS up to L


def answer_text(task: Task, example: dict[str, Any], solution: str | None = None) -> str:
    """The reference answer a completion should be: the bare solution, or it in <answer> tags."""
    solution = str(example["solution"]) if solution is None else solution
    return solution if task.prompt_style == "compact" else f"<answer>\n{solution}\n</answer>"


def reference_answers(task: Task, examples: list[dict[str, Any]], lazy_fraction: float = 0.0,
                      seed: int = 0) -> list[str]:
    """The solver's answer of every example (checked: each scores full reward), with a seeded
    ``lazy_fraction`` of them (rounded to whole examples) replaced by the task's lazy teacher's
    (``LAZY_TEACHERS``; Countdown: the numbers summed in the order given)."""
    answers = [answer_text(task, e) for e in examples]
    rewards = task.score(examples, answers)
    bad = next((a for a, r in zip(answers, rewards, strict=True) if not task.is_correct(r)), None)
    if bad is not None:
        raise ValueError(f"{task.name}: reference answer {bad!r} does not score full reward")
    n_lazy = round(lazy_fraction * len(examples))
    if n_lazy and task.name not in LAZY_TEACHERS:
        raise ValueError(f"{task.name}: no lazy teacher (data.lazy_fraction needs one of "
                         f"{tuple(LAZY_TEACHERS)})")
    for i in random.Random(f"lazy-{seed}").sample(range(len(examples)), n_lazy):
        answers[i] = answer_text(task, examples[i], LAZY_TEACHERS[task.name](examples[i]))
    return answers


def encode_pool(task: Task, examples: list[dict[str, Any]], answers: list[str], tokenizer,
                length: int) -> Pool:
    """Encode ``examples`` with ``answers``; one-line errors for unusable data."""
    eos, unk = tokenizer.eos_token_id, tokenizer.unk_token_id
    prompts, responses = [], torch.full((len(examples), length), eos, dtype=torch.long)
    for row, (example, answer) in enumerate(zip(examples, answers, strict=True)):
        prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if unk is not None and (unk in prompt or unk in ids):
            raise ValueError(f"{task.name}: the tokenizer cannot encode {example['prompt'] + answer!r}")
        if len(ids) > length:
            raise ValueError(
                f"data.response_length={length} is too short for the {task.name} answer {answer!r} "
                f"({len(ids)} tokens)"
            )
        prompts.append(prompt)
        responses[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return Pool(prompts, responses)


def _task(name: str, prompt_style: str, options: dict[str, Any], where: str) -> Task:
    try:
        return get_task(name, prompt_style=prompt_style, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def build_data(cfg: DataSection, tokenizer, seed: int) -> tuple[Task, list[Pool], Task | None]:
    """The main task, the training pools (main first, then the mixed-in task's), the mixed task."""
    task = _task(cfg.task, cfg.prompt_style, cfg.task_options, "data.task_options")
    examples = task.examples("train", cfg.train_size, seed)
    answers = reference_answers(task, examples, cfg.lazy_fraction, seed)
    pools = [encode_pool(task, examples, answers, tokenizer, cfg.response_length)]
    mix = None
    if cfg.mix_task is not None and cfg.mix_fraction > 0:
        mix = _task(cfg.mix_task, cfg.prompt_style, cfg.mix_options, "data.mix_options")
        examples = mix.examples("train", cfg.mix_train_size, seed)
        pools.append(encode_pool(mix, examples, reference_answers(mix, examples), tokenizer,
                                 cfg.response_length))
    return task, pools, mix


def draw_batch(
    pools: list[Pool], rows: list[int], generator: torch.Generator, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``rows[k]`` random pairs from ``pools[k]`` (with replacement), left-padded and joined:
    ``input_ids (B, P+L)``, ``attention_mask (B, P+L)`` bool, and ``P``."""
    prompts, responses = [], []
    for pool, n in zip(pools, rows, strict=True):
        if n == 0:
            continue
        idx = torch.randint(len(pool.prompts), (n,), generator=generator)
        prompts += [pool.prompts[i] for i in idx.tolist()]
        responses.append(pool.responses[idx])
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)  # (B, P)
    response = torch.cat(responses)  # (B, L)
    ids = torch.cat([prompt_ids, response], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(response, dtype=torch.bool)], dim=1)
    return ids, mask, prompt_ids.shape[1]


def init_weights(model: torch.nn.Module, std: float, generator: torch.Generator) -> None:
    """Re-initialise ``model`` from ``generator``: matrices N(0, std²), norm weights 1, biases 0."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.copy_(noise * std)
            elif name.endswith(".bias"):
                param.zero_()
            else:
                param.fill_(1.0)


def build_model(cfg: ModelSection, generator: torch.Generator):
    """``(model, tokenizer)``: the checkpoint ``init_from``, or a fresh built-in model."""
    if cfg.init_from is not None:
        if not os.path.isdir(os.path.expanduser(cfg.init_from)):
            raise FileNotFoundError(f"model.init_from: checkpoint directory {cfg.init_from!r} does not exist")
        return load_model(cfg.init_from, device=cfg.device)
    tokenizer = char_tokenizer()
    try:
        config = LLaDAConfig(
            vocab_size=len(tokenizer), d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers,
            mlp_hidden_size=cfg.mlp_hidden_size, rope_theta=cfg.rope_theta, init_std=cfg.init_std,
            mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
    with torch.random.fork_rng(devices=[]):  # construction draws from the global RNG; keep it intact
        model = LLaDAModelLM(config)
    init_weights(model, cfg.init_std, generator)
    return model.to(cfg.device), tokenizer


class RunDir:
    """The run directory (``train.output_dir``, or ``-2``, ``-3``, ... if that one is taken, as for
    ``bgpo train``): resolved config (written atomically), metrics (appended line by line and
    flushed) and generations (written atomically)."""

    def __init__(self, cfg: SFTConfig):
        self.path = Path(fresh_dir(cfg.train.output_dir))
        write_atomic(str(self.path / "config.yaml"), yaml.safe_dump(to_dict(cfg), sort_keys=False))

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_generations(self, samples: list[dict[str, Any]]) -> None:
        write_atomic(str(self.path / "generations.jsonl"), "".join(json.dumps(s) + "\n" for s in samples))


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]sft[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  held-out acc {task.fields[acc]}"),
        TextColumn("ETA"), TimeRemainingColumn(),
        console=Console(stderr=True),
    )


@dataclass
class Session:
    """What one SFT run holds while it trains."""

    cfg: SFTConfig
    run: RunDir
    model: torch.nn.Module
    tokenizer: Any
    task: Task
    pools: list[Pool]
    rows: list[int]
    eval_examples: list[dict[str, Any]]
    mix: Task | None
    generator: torch.Generator
    started: float

    @classmethod
    def start(cls, cfg: SFTConfig) -> Session:
        """Build model, data and held-out set, then the run directory (a failed start writes nothing)."""
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(cfg.train.seed)
        model, tokenizer = build_model(cfg.model, generator)
        task, pools, mix = build_data(cfg.data, tokenizer, cfg.train.seed)
        n_mix = round(cfg.train.batch_size * cfg.data.mix_fraction) if mix is not None else 0
        rows = [cfg.train.batch_size - n_mix] + ([n_mix] if mix is not None else [])
        eval_examples = task.examples("test", cfg.eval.size, cfg.eval.seed)
        run = RunDir(cfg)
        return cls(cfg, run, model, tokenizer, task, pools, rows, eval_examples, mix, generator, started)

    def evaluate(self, step: int) -> dict[str, Any]:
        """Greedy held-out accuracy of the main task, logged to metrics.jsonl."""
        cfg = self.cfg.eval
        result = evaluate(self.model, self.tokenizer, self.task, self.eval_examples, cfg.sampler(),
                          batch_size=cfg.batch_size)
        record = {"kind": "eval", "step": step, "task": self.task.name, "accuracy": result["accuracy"],
                  "reward": result["reward"], "n": result["n"],
                  "elapsed_s": round(time.perf_counter() - self.started, 2)}
        self.run.log(record)
        return result


def _step(s: Session, optimizer, scheduler) -> dict[str, float]:
    """One optimizer step on a fresh random batch."""
    device = s.cfg.model.device
    ids, mask, prompt_length = draw_batch(s.pools, s.rows, s.generator, s.tokenizer.pad_token_id)
    loss, metrics = sft_loss(s.model, ids.to(device), mask.to(device), prompt_length, s.generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip = s.cfg.train.grad_clip
    if clip > 0:
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(s.model.parameters(), clip))
    optimizer.step()
    scheduler.step()
    return metrics


def _train(s: Session) -> tuple[int, dict[str, Any], bool]:
    """Train until ``train.steps`` or until held-out accuracy enters the stopping window.

    Returns the steps done, the last evaluation (always of the final weights) and whether the
    run stopped in the window."""
    cfg = s.cfg.train
    s.model.train()
    optimizer = torch.optim.AdamW(s.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cfg.lr_factor)
    window: list[dict[str, float]] = []
    with _progress() as bar:
        job = bar.add_task("training", total=cfg.steps, loss=math.nan, acc="-")
        for step in range(1, cfg.steps + 1):
            window.append(_step(s, optimizer, scheduler))
            bar.update(job, advance=1, loss=window[-1]["loss"])
            if step % cfg.log_every == 0:
                s.run.log({"kind": "train", "step": step, "lr": scheduler.get_last_lr()[0],
                           **{k: sum(m[k] for m in window) / len(window) for k in window[0]},
                           "elapsed_s": round(time.perf_counter() - s.started, 2)})
                window = []
            if step % s.cfg.eval.every and step != cfg.steps:
                continue
            result = s.evaluate(step)
            accuracy = result["accuracy"]
            bar.update(job, acc=f"{accuracy:.3f}")
            bar.console.print(f"step {step}: held-out {s.task.name} accuracy {accuracy:.3f} "
                              f"({result['n']} puzzles, greedy)")
            if s.cfg.eval.in_window(accuracy):
                return step, result, True
    return cfg.steps, result, False


def run_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Train with :func:`sft_loss`, evaluate, write the run directory; return the summary.

    The run directory (``train.output_dir``) holds ``config.yaml`` (resolved), ``metrics.jsonl``
    (training loss every ``log_every`` steps, every evaluation, a final record),
    ``generations.jsonl`` (the last evaluation's completions) and ``checkpoint/`` (model and
    tokenizer, loadable with :func:`bgpo.models.load_model`)."""
    s = Session.start(cfg)
    steps, result, stopped = _train(s)
    checkpoint = save_checkpoint(s.model, s.tokenizer, str(s.run.path))
    s.run.write_generations(result["samples"])
    summary: dict[str, Any] = {
        "kind": "final", "steps": steps, "stopped_in_window": stopped, "task": s.task.name,
        "accuracy": result["accuracy"], "reward": result["reward"], "eval_size": result["n"],
        "sampler": {"gen_length": cfg.eval.gen_length, "steps": cfg.eval.steps,
                    "block_length": cfg.eval.block_length, "temperature": 0.0},
    }
    if s.mix is not None:
        examples = s.mix.examples("test", cfg.eval.size, cfg.eval.seed)
        mixed = evaluate(s.model, s.tokenizer, s.mix, examples, cfg.eval.sampler(), cfg.eval.batch_size)
        summary.update(mix_task=s.mix.name, mix_accuracy=mixed["accuracy"], mix_reward=mixed["reward"])
    summary["seconds"] = round(time.perf_counter() - s.started, 2)
    s.run.log(summary)
    return {**summary, "run_dir": str(s.run.path), "checkpoint": str(checkpoint)}


USAGE = """usage: bgpo sft [CONFIG.yaml] [key=value ...]

Masked-diffusion SFT (LLaDA's objective) of the built-in model or a checkpoint on generated
task data. Keys are section.field, or a bare field name where it is unique. Fields:
"""


def main(argv: list[str] | None = None) -> None:
    """``bgpo sft [CONFIG] [key=value ...]``; errors propagate for the caller to print."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + describe(SFTConfig, ALIASES))
        return
    path = argv[0] if argv and "=" not in argv[0] else None
    cfg = load(SFTConfig, path, argv[1:] if path else argv, ALIASES)
    out = run_sft(cfg)
    line = (f"held-out {out['task']} accuracy {out['accuracy']:.4f} on {out['eval_size']} puzzles "
            f"(greedy, {out['sampler']})")
    if "mix_accuracy" in out:
        line += f"; {out['mix_task']} accuracy {out['mix_accuracy']:.4f}"
    print(f"{line}\nsteps {out['steps']}, {out['seconds']:.0f} s; checkpoint: {out['checkpoint']}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        print(f"bgpo sft: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bgpo sft: interrupted", file=sys.stderr)
        sys.exit(130)

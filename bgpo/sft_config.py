"""Configuration of ``bgpo sft``: every field, its default and meaning (the comment above it).

``configs/sft-countdown-tiny.yaml`` (these defaults with ``train.steps=6000`` and
``data.lazy_fraction=0.35``) reproduces ``checkpoints/countdown-tiny`` (see its ``RECIPE.md``);
``bgpo sft --help`` prints this file's fields with their comments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bgpo.sampler import SamplerConfig

COUNTDOWN_OPTIONS = {"min_numbers": 3, "max_numbers": 3, "max_value": 20, "max_target": 60}
SUDOKU_OPTIONS = {"min_empty": 4, "max_empty": 8}
SCHEDULES = ("cosine", "constant")
# The lazy teacher of each task that has one (data.lazy_fraction): example -> bare answer.
LAZY_TEACHERS = {"countdown": lambda example: "+".join(map(str, example["numbers"]))}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _positive(section: Any, *names: str) -> None:
    for name in names:
        _require(getattr(section, name) >= 1, f"{name} must be >= 1, got {getattr(section, name)}")


@dataclass
class ModelSection:
    # Checkpoint directory (save_pretrained layout) to start from; null = a fresh built-in model.
    init_from: str | None = None
    # Width of a fresh model (LLaDA's d_model).
    d_model: int = 128
    # Transformer blocks of a fresh model.
    n_layers: int = 4
    # Attention heads of a fresh model; d_model / n_heads must be even.
    n_heads: int = 4
    # Hidden size of a fresh model's SwiGLU MLP.
    mlp_hidden_size: int = 384
    # Rotary base of a fresh model (LLaDA's 500000; 10000 learns ~30-token tasks markedly faster).
    rope_theta: float = 500000.0
    # Standard deviation of a fresh model's normal weight initialisation.
    init_std: float = 0.02
    # Device to train and evaluate on ("cpu", "cuda", "cuda:1", ...).
    device: str = "cpu"


@dataclass
class DataSection:
    # Main task: trained on, and its held-out accuracy is tracked (countdown or sudoku).
    task: str = "countdown"
    # Prompt style of both tasks: "compact" (bare answer, tiny char models) or "d1" (<answer> tags).
    prompt_style: str = "compact"
    # Options of the main task (keywords of bgpo.tasks.get_task, e.g. max_value, max_target).
    task_options: dict[str, Any] = field(default_factory=lambda: dict(COUNTDOWN_OPTIONS))
    # Distinct training puzzles of the main task (from its train split).
    train_size: int = 11000
    # Task mixed into training (null = none); it is evaluated at the end only.
    mix_task: str | None = "sudoku"
    # Options of the mixed-in task.
    mix_options: dict[str, Any] = field(default_factory=lambda: dict(SUDOKU_OPTIONS))
    # Distinct training puzzles of the mixed-in task.
    mix_train_size: int = 2000
    # Share of every training batch drawn from the mixed-in task (rounded to whole rows).
    mix_fraction: float = 0.25
    # Response length L: the answer, then EOS up to L tokens.
    response_length: int = 16
    # Share of the main task's training puzzles whose answer comes from a lazy teacher instead of
    # the solver (Countdown: the numbers added in the order given, right only when that sum is
    # the target). It plants a habit that costs accuracy and that RL can find from the reward
    # alone; 0 = every answer from the solver. The puzzles are drawn once, from the data seed.
    lazy_fraction: float = 0.0

    def __post_init__(self) -> None:
        _positive(self, "train_size", "mix_train_size", "response_length")
        _require(0.0 <= self.mix_fraction < 1.0, f"mix_fraction must be in [0, 1), got {self.mix_fraction}")
        _require(0.0 <= self.lazy_fraction <= 1.0,
                 f"lazy_fraction must be in [0, 1], got {self.lazy_fraction}")
        _require(self.lazy_fraction == 0 or self.task in LAZY_TEACHERS,
                 f"lazy_fraction needs a task with a lazy teacher {tuple(LAZY_TEACHERS)}, got {self.task!r}")


@dataclass
class TrainSection:
    # Optimizer steps (the run may stop earlier: eval.stop_at_accuracy_min/max).
    steps: int = 4000
    # Sequences per optimizer step.
    batch_size: int = 64
    # Peak AdamW learning rate.
    lr: float = 1e-3
    # AdamW decoupled weight decay.
    weight_decay: float = 0.01
    # Steps of linear learning-rate warm-up from 0.
    warmup_steps: int = 100
    # After warm-up: "cosine" (decay to min_lr_ratio * lr at train.steps) or "constant".
    schedule: str = "cosine"
    # Final learning rate of the cosine schedule, as a fraction of lr.
    min_lr_ratio: float = 0.1
    # Clip the global gradient norm to this value (0 = no clipping).
    grad_clip: float = 1.0
    # Seed of the model initialisation, the training data, batch order and masks.
    seed: int = 0
    # Write the mean training loss to metrics.jsonl every this many steps.
    log_every: int = 25
    # Run directory: config.yaml, metrics.jsonl, checkpoint/; a taken one becomes output_dir-2, ...
    output_dir: str = "runs/sft-countdown-tiny"

    def __post_init__(self) -> None:
        _positive(self, "steps", "batch_size", "log_every")
        _require(self.lr > 0 and min(self.weight_decay, self.warmup_steps, self.grad_clip) >= 0,
                 "lr must be > 0 and weight_decay, warmup_steps, grad_clip >= 0")
        _require(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``lr`` for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class EvalSection:
    # Evaluate held-out accuracy every this many steps; always at the end.
    every: int = 250
    # Held-out (test split) puzzles of the main task per evaluation.
    size: int = 256
    # Seed choosing the held-out puzzles (bgpo.tasks Task.examples("test", size, seed)).
    seed: int = 0
    # Prompts per sampler call during evaluation.
    batch_size: int = 128
    # Sampler response length for evaluation (LLaDA's gen_length).
    gen_length: int = 16
    # Sampler denoising steps for evaluation.
    steps: int = 16
    # Sampler semi-autoregressive block length for evaluation.
    block_length: int = 16
    # Stop the first time held-out accuracy is >= this (and <= the max below); null = never.
    stop_at_accuracy_min: float | None = None
    # Upper end of the stopping window (an evaluation above it does not stop the run).
    stop_at_accuracy_max: float = 0.35

    def __post_init__(self) -> None:
        _positive(self, "every", "size", "batch_size")
        low, high = self.stop_at_accuracy_min, self.stop_at_accuracy_max
        _require(low is None or 0.0 <= low <= high <= 1.0,
                 f"need 0 <= stop_at_accuracy_min <= stop_at_accuracy_max <= 1, got {low}, {high}")
        self.sampler()  # fails early on inconsistent sampler settings

    def in_window(self, accuracy: float) -> bool:
        """Whether ``accuracy`` lies in the stopping window."""
        low = self.stop_at_accuracy_min
        return low is not None and low <= accuracy <= self.stop_at_accuracy_max

    def sampler(self) -> SamplerConfig:
        """The greedy sampler settings of evaluation."""
        return SamplerConfig(gen_length=self.gen_length, steps=self.steps, block_length=self.block_length)


@dataclass
class SFTConfig:
    """Everything ``bgpo sft`` needs (``configs/sft-countdown-tiny.yaml``: the shipped checkpoint)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)


ALIASES = {
    "seed": "train.seed",
    "learning_rate": "train.lr",
    "max_steps": "train.steps",
    "max_completion_length": "data.response_length",
    "diffusion_steps": "eval.steps",
    "eval_every": "eval.every",
    "eval_size": "eval.size",
}

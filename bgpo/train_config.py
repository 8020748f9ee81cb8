"""The configuration of ``bgpo train``: one dataclass per component, defaults that run.

The defaults are the built-in CPU job: the shipped tiny model on compact Countdown, BGPO with
``n_t = 16``, on-policy. The paper's settings (ALGORITHM §5) are presets in ``configs/``.
Every field's help is the comment above it (``bgpo train --help-config``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bgpo import config as cfglib
from bgpo.algorithms import get_objective
from bgpo.sampler import SamplerConfig
from bgpo.sft_config import COUNTDOWN_OPTIONS

SHIPPED_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "checkpoints", "countdown-tiny")


def _countdown_options() -> dict:
    return dict(COUNTDOWN_OPTIONS)  # the puzzles the shipped model was trained on


@dataclass
class ModelSection:
    # Checkpoint directory (save_pretrained layout) or hub id of a LLaDA-architecture model.
    path: str = SHIPPED_MODEL
    # Parameter dtype: float32, bfloat16, float16 or float64.
    dtype: str = "float32"
    # Torch device: cpu, cuda or cuda:N.
    device: str = "cpu"
    # Recompute each block's activations in backward instead of keeping them (less memory).
    gradient_checkpointing: bool = False
    # Wrap prompts in the tokenizer's chat template (instruct models such as LLaDA-8B-Instruct).
    chat_template: bool = False
    # LoRA rank of adapters on every block's attention and MLP projections; 0 = full fine-tuning.
    # Only the adapters train; the saved checkpoint has them merged into the weights.
    lora_rank: int = 0
    # LoRA scale numerator: the update is (lora_alpha / lora_rank) · B A.
    lora_alpha: float = 16.0


@dataclass
class TaskSection:
    # Task: countdown or sudoku.
    name: str = "countdown"
    # Prompt format: compact (tiny character-level models) or d1 (<reasoning>/<answer> tags).
    prompt_style: str = "compact"
    # Task generator options (countdown: min/max_numbers, min/max_value, min/max_target).
    options: dict = field(default_factory=_countdown_options)
    # Training prompts from a CSV/JSONL file (d1's columns accepted); empty = generated puzzles.
    train_file: str = ""
    # Held-out prompts from a CSV/JSONL file; empty = the generated test split.
    eval_file: str = ""
    # Generated training puzzles, cycled over in a seeded random order.
    train_size: int = 10000
    # Held-out puzzles evaluated greedily (paper: the task's test split).
    eval_size: int = 256
    # User reward "module:function" or "file.py:function" with TRL's signature; empty = task's.
    reward: str = ""


@dataclass
class RolloutSection:
    # Response length L in tokens (paper: 256 for Countdown/Sudoku, 512 for math and code).
    gen_length: int = 16
    # Diffusion steps per rollout (paper: 128 for Countdown/Sudoku, 256 math, 512 code).
    steps: int = 16
    # Semi-autoregressive block length (paper: 32).
    block_length: int = 16
    # Rollout sampling temperature (paper: 0.6; 1.0 gives the tiny model more varied groups).
    temperature: float = 1.0
    # Remasking rule: low_confidence (paper) or random.
    remasking: str = "low_confidence"
    # Diffusion steps for evaluation; 0 = same as steps (paper: 256 for Countdown/Sudoku).
    eval_steps: int = 0
    # Make the first of each prompt's G responses the greedy (T = 0) decode, so every group
    # compares samples with what greedy decoding answers (self-critical); false = all sampled.
    greedy_in_group: bool = False


@dataclass
class AlgoSection:
    # Objective: bgpo, bgpo-taylor, bgpo-jensen, vrpo, vrpo-exact or diffu-grpo.
    name: str = "bgpo"
    # Monte-Carlo samples per response (paper: BGPO 16, 32 for Sudoku; VRPO 4; diffu-GRPO 1).
    n_t: int = 16
    # (response, sample) pairs per forward pass: memory/speed trade, no effect on the gradient.
    mc_batch_size: int = 128
    # Responses per backward for VRPO (bounds its retained graphs); 0 = the whole mini-batch.
    micro_batch_size: int = 0
    # Timesteps: stratified (default, lower variance) or iid (the paper's).
    timesteps: str = "stratified"
    # ELBO weighting: continuous (1/t, paper Eq. 4) or discrete (L/k, LLaDA's estimator).
    weighting: str = "continuous"
    # ELBO normalisation: length (÷L, keeps exp(d) tame off-policy) or sum (paper formula).
    normalisation: str = "length"
    # PPO-style clip ε of per-sample ratios (off-policy only); null = off (diffu-GRPO: 0.2).
    clip_eps: float | None = None
    # Dual-clip constant for negative advantages (re-implementation: 3); null = off.
    dual_clip: float | None = None
    # diffu-GRPO: k3 KL coefficient β to the initial model (0 = no reference model).
    beta: float = 0.0
    # diffu-GRPO: probability of masking each prompt token (d1: 0.15).
    p_mask_prompt: float = 0.15
    # Divide advantages by the group's std (paper Eq. 18); false = mean-centring only (d1).
    scale_advantages: bool = True


@dataclass
class TrainSection:
    # Optimizer steps on-policy; rollout batches when mu > 1 (paper: 560 for Countdown).
    steps: int = 300
    # Prompts per rollout batch (paper: 16).
    prompts_per_step: int = 16
    # Responses per prompt G (paper: 8).
    num_generations: int = 8
    # Mini-batches per rollout batch: 1 = on-policy, > 1 = off-policy with one step each.
    mu: int = 1
    # AdamW learning rate (paper: 5e-7 for LLaDA-8B; tiny models need far more).
    lr: float = 5e-5
    # AdamW weight decay (paper: 0.01).
    weight_decay: float = 0.01
    # Gradient-norm clip (paper: 1.0); 0 = off.
    grad_clip: float = 1.0
    # Seed of every draw of the run (prompts, rollouts, Monte-Carlo masks).
    seed: int = 0
    # Run directory: config, metrics.jsonl, generations, curves.png, checkpoint.
    output_dir: str = "runs/countdown-bgpo"
    # Evaluate on the held-out split every this many steps (and before and after); 0 = ends only.
    eval_every: int = 50
    # Generations per step written to generations.jsonl.
    log_generations: int = 4
    # Stop after this many minutes of training (checkpoint and final eval still run); 0 = off.
    max_minutes: float = 13.0
    # Also write the resumable state (weights, optimizer, RNG) every this many steps; 0 = only
    # at the end and on Ctrl-C. Resume with `bgpo train --resume RUN_DIR`.
    save_every: int = 0


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    task: TaskSection = field(default_factory=TaskSection)
    rollout: RolloutSection = field(default_factory=RolloutSection)
    algo: AlgoSection = field(default_factory=AlgoSection)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self):
        t = self.train
        for key in ("steps", "prompts_per_step", "num_generations", "mu"):
            if getattr(t, key) < 1:
                raise cfglib.ConfigError(f"train.{key} must be at least 1, got {getattr(t, key)}")
        if (t.prompts_per_step * t.num_generations) % t.mu:
            raise cfglib.ConfigError(
                f"train.mu ({t.mu}) must divide the rollout batch "
                f"({t.prompts_per_step} prompts × {t.num_generations} generations)")
        if self.model.lora_rank < 0:
            raise cfglib.ConfigError(f"model.lora_rank must be >= 0, got {self.model.lora_rank}")
        if t.save_every < 0:
            raise cfglib.ConfigError(f"train.save_every must be >= 0, got {t.save_every}")
        if self.algo.n_t < 1:
            raise cfglib.ConfigError(f"algo.n_t must be at least 1, got {self.algo.n_t}")
        if self.algo.mc_batch_size < 1:
            raise cfglib.ConfigError(f"algo.mc_batch_size must be at least 1, got {self.algo.mc_batch_size}")
        try:
            get_objective(self.algo.name)
        except ValueError as exc:
            raise cfglib.ConfigError(f"algo.name: {exc}") from None
        r = self.rollout
        for steps in (r.steps, r.eval_steps or r.steps):
            try:
                SamplerConfig(r.gen_length, steps, r.block_length, r.temperature, r.remasking)
            except ValueError as exc:
                raise cfglib.ConfigError(str(exc).replace("sampler.", "rollout.")) from None
        if self.task.eval_size < 1:
            raise cfglib.ConfigError(f"task.eval_size must be at least 1, got {self.task.eval_size}")


ALIASES = {
    "max_completion_length": "rollout.gen_length",
    "diffusion_steps": "rollout.steps",
    "block_length": "rollout.block_length",
    "temperature": "rollout.temperature",
    "num_generations": "train.num_generations",
    "learning_rate": "train.lr",
    "num_iterations": "train.mu",
    "max_steps": "train.steps",
    "epsilon": "algo.clip_eps",
    "algorithm": "algo.name",
    "model_path": "model.path",
    "seed": "train.seed",
}


def load_train_config(path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    return cfglib.load(TrainConfig, path, overrides or [], ALIASES)

"""The RL loop (ALGORITHM §4, Algorithm 1): rollout → score → advantages → update → log.

One step: draw ``prompts_per_step`` prompts, sample ``num_generations`` responses each with the
shared sampler (θ_old = the current θ), score them with the task's reward, compute group
advantages, draw ``n_t`` masks per response, then run the objective through the streaming
update — on-policy one optimizer step, off-policy (``mu > 1``) one step per mini-batch with
``ℓ_old`` computed once before the first. Held-out accuracy (greedy, same sampler, same
reward code) is measured before training, every ``eval_every`` steps and at the end.

Everything a run writes goes to ``train.output_dir``: ``config.yaml`` (resolved),
``metrics.jsonl`` (TRL's names where they exist), ``generations.jsonl``, ``eval.jsonl``,
``curves.png``, ``summary.json``, ``checkpoint/`` and ``state.pt`` (weights, optimizer state,
the run's RNG state, the prompt order and the step: everything :func:`train` needs to go on
exactly where it stopped, with ``resume=run_dir``). Ctrl-C stops after saving all of them; a
Ctrl-C during an update lets that step finish first (a second one stops at once, keeping the
last saved state), so the saved state always sits on a step boundary and a resumed run repeats
the uninterrupted one bit for bit (same device and thread count).
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import threading
import time
from dataclasses import dataclass, fields, replace

import torch

from bgpo import runlog
from bgpo.algorithms import get_objective, group_advantages
from bgpo.evaluate import encode_prompts, evaluate
from bgpo.masking import draw_masks
from bgpo.models import load_model
from bgpo.models.lora import apply_lora
from bgpo.rollout import RolloutBatch
from bgpo.sampler import Generation, SamplerConfig, decode_completions, generate
from bgpo.tasks import get_task, load_examples
from bgpo.train_config import TrainConfig
from bgpo.update import compute_old, streaming_update


@dataclass
class Rollouts:
    batch: RolloutBatch
    rewards: torch.Tensor  # (N,) float
    texts: list[str]
    prompts: list[str]
    lengths: torch.Tensor  # (N,) completion length before the first EOS


def build_objective(cfg: TrainConfig):
    a = cfg.algo
    options = {"normalisation": a.normalisation}
    if a.name == "diffu-grpo":
        options.update(beta=a.beta, p_mask_prompt=a.p_mask_prompt, clip_eps=a.clip_eps or 0.2)
    else:
        options.update(clip_eps=a.clip_eps, dual_clip=a.dual_clip)
    return get_objective(a.name, **options)


def task_data(cfg: TrainConfig):
    """The task and its (train, held-out) examples, generated or read from files."""
    t = cfg.task
    task = get_task(t.name, reward=t.reward or None, prompt_style=t.prompt_style, **t.options)
    if t.train_file:
        train = load_examples(t.train_file, task)
    else:
        train = task.examples("train", t.train_size, seed=cfg.train.seed)
    held_out = (load_examples(t.eval_file, task, limit=t.eval_size) if t.eval_file
                else task.examples("test", t.eval_size, seed=cfg.train.seed))
    return task, train, held_out


def sampler_configs(cfg: TrainConfig) -> tuple[SamplerConfig, SamplerConfig]:
    r = cfg.rollout
    rollout = SamplerConfig(r.gen_length, r.steps, r.block_length, r.temperature, r.remasking)
    greedy = SamplerConfig(r.gen_length, r.eval_steps or r.steps, r.block_length, 0.0, r.remasking)
    return rollout, greedy


def generate_groups(model, ids, mask, sampler: SamplerConfig, generator, g_size: int, greedy_first: bool):
    """Generate every row; with ``greedy_first`` the first row of each group of ``g_size`` is decoded
    greedily (the rest sampled), and the rows come back in their original order."""
    if not greedy_first:
        return generate(model, ids, mask, sampler, generator=generator)
    rows = torch.arange(ids.shape[0], device=ids.device)
    first, rest = rows[rows % g_size == 0], rows[rows % g_size != 0]
    greedy = generate(model, ids[first], mask[first], replace(sampler, temperature=0.0), generator=generator)
    parts = [(first, greedy)]
    if len(rest):
        parts.append((rest, generate(model, ids[rest], mask[rest], sampler, generator=generator)))
    merged = {}
    for f in fields(Generation):
        template = getattr(greedy, f.name)
        out = template.new_empty((ids.shape[0], *template.shape[1:]))
        for index, gen in parts:
            out[index] = getattr(gen, f.name)
        merged[f.name] = out
    return Generation(**merged)


def collect_rollouts(model, tokenizer, task, examples, cfg, sampler, generator) -> Rollouts:
    """Sample G responses per prompt, score them, and package the update's batch."""
    g_size = cfg.train.num_generations
    repeated = [e for e in examples for _ in range(g_size)]
    device = next(model.parameters()).device
    ids, mask = encode_prompts(tokenizer, [e["prompt"] for e in repeated], device, cfg.model.chat_template)
    gen = generate_groups(model, ids, mask, sampler, generator, g_size, cfg.rollout.greedy_in_group)
    texts = decode_completions(tokenizer, gen)
    rewards = torch.tensor(task.score(repeated, texts), dtype=torch.float64)
    adv = group_advantages(rewards, g_size, scale=cfg.algo.scale_advantages)
    draws = draw_masks(len(repeated), cfg.algo.n_t, generator, cfg.algo.timesteps, cfg.algo.weighting)
    positions = torch.arange(sampler.gen_length, device=device)
    completion_mask = positions[None, :] <= gen.eos_position[:, None]  # up to and incl. first EOS
    batch = RolloutBatch(gen.sequences, gen.attention_mask, gen.prompt_length, adv, draws,
                         completion_mask)
    return Rollouts(batch, rewards, texts, [e["prompt"] for e in repeated], gen.lengths.cpu())


def optimise(model, objective, optimizer, batch: RolloutBatch, cfg: TrainConfig, ref_model, generator):
    """One on-policy step, or ``mu`` off-policy steps over mini-batches; returns mean metrics."""
    a, t = cfg.algo, cfg.train
    model.train()
    old = None
    if t.mu > 1:
        old = compute_old(model, objective, batch, a.mc_batch_size)
    order = torch.randperm(batch.num_responses, generator=generator) if t.mu > 1 else (
        torch.arange(batch.num_responses))
    collected: list[dict[str, float]] = []
    for rows in order.chunk(t.mu):
        optimizer.zero_grad(set_to_none=False)
        metrics = streaming_update(
            model, objective, batch.select(rows), old=None if old is None else old[rows],
            ref_model=ref_model, mc_batch_size=a.mc_batch_size,
            micro_batch_size=a.micro_batch_size or None)
        params = [p for p in model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else float("inf"))
        metrics["grad_norm"] = norm.item()
        optimizer.step()
        collected.append(metrics)
    return {k: sum(m[k] for m in collected) / len(collected) for k in collected[0]}


def step_metrics(step: int, roll: Rollouts, update: dict, task, timings: dict, g_size: int) -> dict:
    grouped = roll.rewards.view(-1, g_size)
    out = {
        "step": step,
        "reward": roll.rewards.mean().item(),
        "reward_std": grouped.std(dim=1).mean().item() if g_size > 1 else 0.0,
        "frac_reward_zero_std": (grouped.std(dim=1) == 0).double().mean().item() if g_size > 1 else 1.0,
        "accuracy": task.metrics(roll.rewards.tolist())["accuracy"],
        "completions/mean_length": roll.lengths.double().mean().item(),
    }
    out.update(update)
    out.update({f"time/{k}": v for k, v in timings.items()})
    out["tokens_per_second"] = update["tokens"] / max(timings["update"], 1e-9)
    out["peak_memory_mib"] = runlog.peak_memory_mib()
    return out


def run_eval(model, tokenizer, task, held_out, greedy, log: runlog.RunLog, step: int, chat: bool) -> float:
    result = evaluate(model, tokenizer, task, held_out, greedy, chat_template=chat,
                      progress=lambda done, total: log.phase(f"eval {done}/{total}"))
    log.write_eval(step, result)
    return result["accuracy"]


STATE_FILE = "state.pt"


def save_state(run_dir: str, model, optimizer, generator_state: torch.Tensor, step: int,
               order: list[int], summary: dict) -> None:
    """Write the resumable state of a run after ``step`` (temporary file, then renamed).

    Frozen parameters (the base model under LoRA) are left out: a resumed run reloads them from
    ``model.path``, where they came from and where they still are unchanged.
    """
    frozen = _frozen(model)
    weights = {k: v for k, v in model.state_dict().items() if k not in frozen}
    state = {"format": 1, "step": step, "model": weights, "optimizer": optimizer.state_dict(),
             "generator": generator_state, "order": order, "summary": summary}
    runlog.write_file_atomic(os.path.join(run_dir, STATE_FILE), lambda tmp: torch.save(state, tmp))


def _frozen(model) -> set[str]:
    """Names of the parameters that do not train (the base model under LoRA)."""
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def load_state(run_dir: str) -> dict:
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cannot resume: {path} does not exist (not a bgpo train run directory?)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != 1:
        raise ValueError(f"cannot resume: {path} has an unknown format {state.get('format')!r}")
    return state


def restore_state(state: dict, cfg: TrainConfig, num_train: int, model, optimizer, generator) -> None:
    """Put a saved run's weights, optimizer and RNG back; one-line errors where they cannot fit."""
    if len(state["order"]) != num_train:
        raise ValueError(f"cannot resume: the run drew from {len(state['order'])} training prompts, "
                         f"this config gives {num_train}")
    if state["step"] >= cfg.train.steps:
        raise ValueError(f"cannot resume: the run already did {state['step']} steps; "
                         f"raise train.steps (now {cfg.train.steps}) to train further")
    frozen = _frozen(model)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected or set(missing) - frozen:
        raise ValueError(f"cannot resume: state.pt does not match this model (missing "
                         f"{sorted(set(missing) - frozen)[:3]}, unexpected {sorted(unexpected)[:3]}); "
                         f"was model.lora_rank changed?")
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])


@contextlib.contextmanager
def held_interrupt(log: runlog.RunLog):
    """Hold a first Ctrl-C inside the block: the yielded list records it for the caller to act
    on at a step boundary; a second Ctrl-C raises at once."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def handler(signum, frame):
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)
        log.note("Ctrl-C: finishing this step, then saving (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield pending
    finally:
        signal.signal(signal.SIGINT, previous)


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Run the whole loop; returns the summary (accuracy before and after, timings).

    ``resume``: a run directory written by an earlier call; training goes on from its
    ``state.pt`` up to ``cfg.train.steps`` (``cfg`` is normally that run's ``config.yaml``).
    """
    state = load_state(resume) if resume else None
    generator = torch.Generator().manual_seed(cfg.train.seed)
    task, train_set, held_out = task_data(cfg)
    objective = build_objective(cfg)
    model, tokenizer = load_model(cfg.model.path, cfg.model.dtype, cfg.model.device)
    if cfg.model.gradient_checkpointing:
        model.set_gradient_checkpointing(True)
    ref_model = copy.deepcopy(model).eval() if objective.uses_reference else None  # θ_ref = initial θ
    if cfg.model.lora_rank:
        apply_lora(model, cfg.model.lora_rank, cfg.model.lora_alpha, seed=cfg.train.seed)
    rollout, greedy = sampler_configs(cfg)
    chat = cfg.model.chat_template
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr,
                                  weight_decay=cfg.train.weight_decay)
    if state is None:
        log = runlog.RunLog(cfg.train.output_dir, cfg, total_steps=cfg.train.steps)
        summary = {"accuracy_before": run_eval(model, tokenizer, task, held_out, greedy, log, 0, chat)}
        order = torch.randperm(len(train_set), generator=generator).tolist()
        done = 0
    else:
        restore_state(state, cfg, len(train_set), model, optimizer, generator)
        done, order, summary = state["step"], state["order"], dict(state["summary"])
        log = runlog.RunLog(resume, cfg, total_steps=cfg.train.steps, resume_step=done)
    generator_state = generator.get_state()  # the RNG as it was after step `done`
    start, step, updating = time.perf_counter(), done, False
    try:
        for step in range(done + 1, cfg.train.steps + 1):
            first = (step - 1) * cfg.train.prompts_per_step
            picked = [train_set[order[(first + k) % len(order)]] for k in range(cfg.train.prompts_per_step)]
            timings = {}
            t0 = time.perf_counter()
            log.phase("rollout")
            roll = collect_rollouts(model, tokenizer, task, picked, cfg, rollout, generator)
            timings["rollout"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            log.phase("update")
            updating = True
            with held_interrupt(log) as interrupted:
                upd = optimise(model, objective, optimizer, roll.batch, cfg, ref_model, generator)
                done, generator_state = step, generator.get_state()
            updating = False
            timings["update"] = time.perf_counter() - t0
            log.write_step(step_metrics(step, roll, upd, task, timings, cfg.train.num_generations),
                           roll.prompts, roll.texts, roll.rewards.tolist(), cfg.train.log_generations)
            if interrupted:
                raise KeyboardInterrupt
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < cfg.train.steps:
                run_eval(model, tokenizer, task, held_out, greedy, log, step, chat)
            if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.train.steps:
                save_state(log.dir, model, optimizer, generator_state, done, order, summary)
            if cfg.train.max_minutes and time.perf_counter() - start > 60 * cfg.train.max_minutes:
                log.note(f"time budget of {cfg.train.max_minutes} min reached after step {step}")
                break
    except KeyboardInterrupt:
        clean = done == step or not updating  # False only after a second Ctrl-C mid-update
        if clean:
            save_state(log.dir, model, optimizer, generator_state, done, order, summary)
        log.note(f"interrupted at step {step}: checkpoint and summary saved"
                 + (f"; resume with `bgpo train --resume {log.dir}`" if clean else
                    " (stopped inside an update: the last periodic state.pt, if any, is older)"))
        log.finish(model, tokenizer, {**summary, "interrupted_at_step": step, "steps_done": done})
        raise
    save_state(log.dir, model, optimizer, generator_state, done, order, summary)
    summary["accuracy_after"] = run_eval(model, tokenizer, task, held_out, greedy, log, step, chat)
    summary.update(steps_done=step, train_minutes=(time.perf_counter() - start) / 60)
    log.finish(model, tokenizer, summary)
    return summary

"""The reverse diffusion process: the one sampler that RL rollouts and evaluation share.

Follows LLaDA's semi-autoregressive sampler (Nie et al., "Large Language Diffusion Models",
arXiv 2502.09992, and its released sampler): the response region of ``gen_length`` tokens
starts as mask tokens after the prompt and is split into blocks decoded left to right.
Each block gets ``steps / num_blocks`` steps; at each step the model predicts every
position at once, and the most confident still-masked positions of the current block are
committed. The number committed per step is the block's masked count split evenly over its
steps, the remainder going to the first steps (10 tokens over 4 steps: 3, 3, 2, 2).
Confidence is the model's probability of its predicted token (``low_confidence``
remasking) or a uniform draw (``random`` remasking); with ``temperature > 0`` the
prediction is a Gumbel-max sample.

Departures from the released sampler, each on purpose:
- Gumbel-max is computed as ``argmax(logits / T - log(-log u))`` in float64, the same
  argmax as the released ``exp(logits) / (-log u)^T`` without its overflow for large
  logits. Confidences are log-probabilities (same order as probabilities, no underflow ties).
- The mask token is never predicted (its logit is set to ``-inf``), so no mask is ever left.
- Ties in confidence go to the leftmost position (a stable sort), on every device.
- Only the current block's logits are converted to float64: the other positions cannot be
  committed at this step, and a full ``(B, T, V)`` float64 copy would dominate memory.
- ``steps > gen_length`` is rejected: such steps would commit nothing and only cost passes.
- Randomness comes only from the ``generator`` argument; sampling with ``temperature > 0``
  or ``random`` remasking without one is an error rather than a silent use of global RNG.
  Noise is drawn on the model's device: a generator on another device (say a CPU one for a
  CUDA model) seeds, with one draw per call, a fresh generator there, because drawing
  ``(B, block_length, V)`` float64 uniforms on the CPU every step would cost more than the
  forward pass. Output is then deterministic per (generator state, device).

Batches: prompts are left-padded, and the attention mask (False = pad) goes to the model
(``None`` when no row has padding, so hub models can keep their unmasked attention path).
Positions in the input are plain indices, so a left-padded prompt sits at shifted absolute
positions compared with the same prompt run alone. Models that derive their positions from
the attention mask (``cumsum(mask) - 1``, as the built-in model does) see identical inputs
either way, so greedy batched completions equal completions of the prompts run one by one.
With ``temperature > 0`` the noise drawn for a row depends on the batch it is in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bgpo.models.base import model_logits, special_tokens

REMASKING = ("low_confidence", "random")
_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)

# progress(steps_done, total_steps, sequences (B, P+L)); the tensor must not be modified.
ProgressFn = Callable[[int, int, torch.Tensor], None]


@dataclass
class SamplerConfig:
    """Settings of the reverse process (LLaDA's ``generate``; paper settings in ALGORITHM §5)."""

    # Response length L in tokens (d1/TRL alias: max_completion_length).
    gen_length: int = 32
    # Total denoising steps over the whole response (alias: diffusion_steps); <= gen_length.
    steps: int = 32
    # Semi-autoregressive block size; gen_length must be a multiple of it.
    block_length: int = 32
    # Sampling temperature for the Gumbel-max prediction; 0 = greedy argmax.
    temperature: float = 0.0
    # Which masked positions to commit first: "low_confidence" (most probable) or "random".
    remasking: str = "low_confidence"

    def __post_init__(self) -> None:
        for name in ("gen_length", "steps", "block_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"sampler.{name} must be a positive integer, got {value!r}")
        if self.gen_length % self.block_length:
            raise ValueError(
                f"sampler.gen_length ({self.gen_length}) must be a multiple of "
                f"sampler.block_length ({self.block_length})"
            )
        if self.steps % self.num_blocks:
            raise ValueError(
                f"sampler.steps ({self.steps}) must be a multiple of the number of blocks "
                f"({self.num_blocks} = gen_length {self.gen_length} / block_length "
                f"{self.block_length})"
            )
        if self.steps > self.gen_length:
            raise ValueError(
                f"sampler.steps ({self.steps}) exceeds sampler.gen_length ({self.gen_length}): "
                "each step must commit at least one token"
            )
        temperature = self.temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ValueError(f"sampler.temperature must be a number, got {temperature!r}")
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"sampler.temperature must be finite and >= 0, got {temperature!r}")
        if self.remasking not in REMASKING:
            raise ValueError(
                f"sampler.remasking must be one of {', '.join(REMASKING)}, got {self.remasking!r}"
            )

    @property
    def num_blocks(self) -> int:
        """Number of semi-autoregressive blocks, decoded left to right."""
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        """Denoising steps spent on each block."""
        return self.steps // self.num_blocks


@dataclass
class Generation:
    """What one call of :func:`generate` produced (all tensors on the model's device)."""

    sequences: torch.Tensor  # (B, P+L) left-padded prompt followed by the completion
    completion_ids: torch.Tensor  # (B, L) the completion alone
    prompt_mask: torch.Tensor  # (B, P+L) bool, True at prompt positions (padding included)
    attention_mask: torch.Tensor  # (B, P+L) bool, True at real tokens, False at left padding
    eos_position: torch.Tensor  # (B,) long, index in the completion of the first EOS, L if none
    lengths: torch.Tensor  # (B,) long, completion tokens before the first EOS (= eos_position)

    @property
    def prompt_length(self) -> int:
        """P, the padded prompt length."""
        return self.sequences.shape[1] - self.completion_ids.shape[1]


def commit_schedule(num_masked: int, steps: int) -> torch.Tensor:
    """Tokens to commit at each of ``steps`` steps: ``num_masked`` split evenly, remainder first.

    ``commit_schedule(10, 4)`` is ``[3, 3, 2, 2]``; with ``steps > num_masked`` the last
    steps commit nothing. Returns a ``(steps,)`` long tensor summing to ``num_masked``.
    """
    if num_masked < 0:
        raise ValueError(f"num_masked must be >= 0, got {num_masked}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    base, remainder = divmod(num_masked, steps)
    schedule = torch.full((steps,), base, dtype=torch.long)
    schedule[:remainder] += 1
    return schedule


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``ids (B, P)`` long and ``mask (B, P)`` bool (True = real)."""
    if len(sequences) == 0:
        raise ValueError("left_pad needs at least one sequence, got none")
    width = max(len(seq) for seq in sequences)  # P
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = True
    return ids, mask


def decode_completions(
    tokenizer, generation: Generation, skip_special_tokens: bool = True
) -> list[str]:
    """Decode each completion up to (excluding) its first EOS with ``tokenizer.decode``."""
    rows = generation.completion_ids.tolist()
    ends = generation.eos_position.tolist()
    return [
        tokenizer.decode(ids[:end], skip_special_tokens=skip_special_tokens)
        for ids, end in zip(rows, ends, strict=True)
    ]


def _check_prompts(
    prompt_ids: torch.Tensor, prompt_attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """Validate the prompt batch; return its attention mask as bool ``(B, P)``."""
    if not isinstance(prompt_ids, torch.Tensor):
        raise ValueError(f"prompt_ids must be a torch.Tensor, got {type(prompt_ids).__name__}")
    if prompt_ids.dim() != 2:
        raise ValueError(
            f"prompt_ids must be (batch, prompt_length), got shape {tuple(prompt_ids.shape)}"
        )
    if prompt_ids.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"prompt_ids must hold integer token ids, got dtype {prompt_ids.dtype}")
    if prompt_ids.shape[0] == 0:
        raise ValueError("prompt_ids is an empty batch (0 rows)")
    if prompt_attention_mask is None:
        return torch.ones_like(prompt_ids, dtype=torch.bool)
    if prompt_attention_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_attention_mask shape {tuple(prompt_attention_mask.shape)} does not match "
            f"prompt_ids shape {tuple(prompt_ids.shape)}"
        )
    mask = prompt_attention_mask
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("prompt_attention_mask must hold only 0/1 or True/False")
        mask = mask.bool()
    if (mask[:, :-1] & ~mask[:, 1:]).any():
        raise ValueError("prompt_attention_mask must be left-padded (padding before the prompt)")
    return mask


def _model_device(model: torch.nn.Module, fallback: torch.device) -> torch.device:
    param = next(model.parameters(), None)
    return fallback if param is None else param.device


def _generator_on(
    generator: torch.Generator | None, device: torch.device
) -> torch.Generator | None:
    """``generator`` if on ``device``, else a generator there seeded by one draw from it."""
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """U[0, 1) float64 draws on ``device`` (where ``generator`` lives)."""
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)


def _predict(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Predicted token per position from float64 ``logits (B, K, V)``: argmax, or Gumbel-max."""
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B, K)
    gumbel = -torch.log(-torch.log(_uniform(tuple(logits.shape), generator, logits.device)))
    return (logits / temperature + gumbel).argmax(dim=-1)  # (B, K)


def _confidence(
    logits: torch.Tensor, predicted: torch.Tensor, remasking: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Confidence ``(B, K)`` float64 of each prediction: log-prob under softmax, or uniform."""
    if remasking == "random":
        return _uniform(tuple(predicted.shape), generator, logits.device)
    chosen = logits.gather(-1, predicted.unsqueeze(-1)).squeeze(-1)  # (B, K)
    return chosen - torch.logsumexp(logits, dim=-1)


def _denoise_step(
    model: torch.nn.Module,
    x: torch.Tensor,
    attention_mask: torch.Tensor | None,
    block: slice,
    num_commit: int,
    config: SamplerConfig,
    mask_id: int,
    generator: torch.Generator | None,
) -> None:
    """Commit the ``num_commit`` most confident masked positions of ``x[:, block]``, in place."""
    logits = model_logits(model, x, attention_mask)[:, block]  # (B, K, V), K = block_length
    logits = logits.to(torch.float64, copy=True)
    logits[..., mask_id] = -math.inf  # never predict the absorbing state
    predicted = _predict(logits, config.temperature, generator)  # (B, K)
    confidence = _confidence(logits, predicted, config.remasking, generator)  # (B, K)
    current = x[:, block]  # (B, K)
    confidence = confidence.masked_fill(current != mask_id, -math.inf)
    # A stable descending sort puts ties at the leftmost position first, on every device.
    order = torch.sort(confidence, dim=1, descending=True, stable=True).indices
    chosen = order[:, :num_commit]  # (B, k)
    x[:, block] = current.scatter(1, chosen, predicted.gather(1, chosen))


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_attention_mask: torch.Tensor | None,
    config: SamplerConfig,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
) -> Generation:
    """Sample ``config.gen_length`` tokens after each left-padded prompt ``(B, P)``.

    ``prompt_attention_mask`` is True/1 at real tokens (None: no padding). ``progress`` is
    called after every step with ``(steps_done, config.steps, sequences (B, P+L))``. The model
    runs in eval mode and gets its previous mode back afterwards.
    """
    prompt_mask_bool = _check_prompts(prompt_ids, prompt_attention_mask)
    needs_noise = config.temperature > 0 or config.remasking == "random"
    if needs_noise and generator is None:
        raise ValueError(
            "sampling with temperature > 0 or random remasking needs a torch.Generator"
        )
    ids = special_tokens(model)
    device = _model_device(model, prompt_ids.device)
    generator = _generator_on(generator, device)
    batch, prompt_len = prompt_ids.shape  # B, P
    length = config.gen_length  # L
    completion = torch.full((batch, length), ids.mask, dtype=torch.long, device=device)
    x = torch.cat([prompt_ids.to(device=device, dtype=torch.long), completion], dim=1)  # (B, P+L)
    real = torch.ones((batch, length), dtype=torch.bool, device=device)
    attention_mask = torch.cat([prompt_mask_bool.to(device), real], dim=1)  # (B, P+L)
    # Without padding the model gets no mask: hub models may then take a faster attention path.
    model_mask = None if bool(prompt_mask_bool.all()) else attention_mask
    schedule = commit_schedule(config.block_length, config.steps_per_block).tolist()

    was_training = model.training
    model.eval()
    try:
        done = 0
        for b in range(config.num_blocks):
            start = prompt_len + b * config.block_length
            block = slice(start, start + config.block_length)
            for num_commit in schedule:
                _denoise_step(model, x, model_mask, block, num_commit, config, ids.mask, generator)
                done += 1
                if progress is not None:
                    progress(done, config.steps, x)
    finally:
        model.train(was_training)
    return _finish(x, attention_mask, prompt_len, ids.eos)


def _finish(
    x: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int, eos_id: int
) -> Generation:
    """Package the sampled ``x (B, P+L)`` with its masks and first-EOS positions."""
    completion_ids = x[:, prompt_len:].clone()  # (B, L)
    is_eos = completion_ids == eos_id  # (B, L)
    first = is_eos.long().argmax(dim=1)  # first True (argmax returns the first maximum)
    none = torch.full_like(first, completion_ids.shape[1])  # L: no EOS in the completion
    eos_position = torch.where(is_eos.any(dim=1), first, none)
    prompt_mask = torch.zeros_like(attention_mask)
    prompt_mask[:, :prompt_len] = True
    return Generation(
        sequences=x,
        completion_ids=completion_ids,
        prompt_mask=prompt_mask,
        attention_mask=attention_mask,
        eos_position=eos_position,
        lengths=eos_position.clone(),
    )

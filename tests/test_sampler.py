"""Invariants of the reverse-diffusion sampler, checked on tiny in-file models.

Two models: a tiny random bidirectional transformer (float64, positions from the attention
mask, padded keys ignored) and a scripted model whose logits the test sets directly, so
that the commit order and the schedule can be predicted exactly.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bgpo.sampler import (
    Generation,
    SamplerConfig,
    commit_schedule,
    decode_completions,
    generate,
    left_pad,
)

V, MASK, EOS, PAD = 16, 15, 14, 13


def _config(model_vocab_ids=(MASK, EOS, PAD)) -> SimpleNamespace:
    mask, eos, pad = model_vocab_ids
    return SimpleNamespace(mask_token_id=mask, eos_token_id=eos, pad_token_id=pad)


class TinyBidirectional(nn.Module):
    """One bidirectional attention block; positions = cumsum(attention_mask) - 1."""

    def __init__(self, seed: int = 0, dim: int = 16, max_len: int = 64) -> None:
        super().__init__()
        self.config = _config()
        self.embed = nn.Embedding(V, dim)
        self.position = nn.Embedding(max_len, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, V)
        self.double()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.25)

    def forward(self, input_ids, attention_mask=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        real = attention_mask.bool()  # (B, T)
        positions = (real.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
        h = self.embed(input_ids) + self.position(positions)  # (B, T, D)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # (B, T, T)
        scores = scores.masked_fill(~real[:, None, :], -math.inf)
        h = h + self.out(scores.softmax(-1) @ v)
        h = h + self.mlp(h)
        return self.head(h)  # (B, T, V)


class Scripted(nn.Module):
    """Logits given by ``script(input_ids) -> (B, T, V)``; records the mode of every call."""

    def __init__(self, script, vocab_ids=(MASK, EOS, PAD)) -> None:
        super().__init__()
        self.config = _config(vocab_ids)
        self.script = script
        self.modes: list[bool] = []

    def forward(self, input_ids, attention_mask=None):
        self.modes.append(self.training)
        return self.script(input_ids)


def _fixed_scores(scores_per_position: torch.Tensor):
    """Script: at position j the token ``j % 5`` gets logit ``scores[j]``, all others 0."""

    def script(input_ids):
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, V, dtype=torch.float64)
        tokens = torch.arange(length) % 5
        logits[:, torch.arange(length), tokens] = scores_per_position[:length]
        return logits

    return script


def _record(model, prompts, mask, config, generator=None) -> tuple[Generation, list]:
    """Run the sampler and keep a copy of the sequences after every step."""
    snapshots = []
    out = generate(
        model,
        prompts,
        mask,
        config,
        generator,
        progress=lambda d, t, x: snapshots.append(x.clone()),
    )
    return out, snapshots


def _prompts(lengths=(3, 7, 5), seed=1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, PAD, (n,), generator=g).tolist() for n in lengths]


# ---------------------------------------------------------------- schedule and helpers


@pytest.mark.parametrize(
    ("num_masked", "steps", "expected"),
    [(10, 4, [3, 3, 2, 2]), (32, 32, [1] * 32), (5, 8, [1] * 5 + [0] * 3), (8, 2, [4, 4])],
)
def test_commit_schedule(num_masked, steps, expected):
    assert commit_schedule(num_masked, steps).tolist() == expected


def test_commit_schedule_errors():
    with pytest.raises(ValueError, match="steps"):
        commit_schedule(4, 0)
    with pytest.raises(ValueError, match="num_masked"):
        commit_schedule(-1, 2)


def test_left_pad():
    ids, mask = left_pad([[1, 2], [3], []], pad_id=PAD)
    assert ids.tolist() == [[1, 2], [PAD, 3], [PAD, PAD]]
    assert mask.tolist() == [[True, True], [False, True], [False, False]]
    with pytest.raises(ValueError, match="at least one"):
        left_pad([], pad_id=PAD)


# ---------------------------------------------------------------- configuration and input


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(gen_length=10, block_length=4, steps=5), "block_length"),
        (dict(gen_length=16, block_length=4, steps=6), "number of blocks"),
        (dict(gen_length=8, block_length=8, steps=16), "exceeds"),
        (dict(remasking="top_k"), "remasking"),
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(gen_length=0), "gen_length"),
        (dict(steps=2.0), "steps"),
    ],
)
def test_bad_config_is_one_line_error(kwargs, field):
    with pytest.raises(ValueError, match=field) as info:
        SamplerConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_input_is_error():
    model, config = TinyBidirectional(), SamplerConfig(gen_length=4, steps=4, block_length=4)
    ids = torch.tensor([[1, 2, 3]])
    cases = [
        (torch.tensor([1, 2, 3]), None, "shape"),
        (ids.double(), None, "integer"),
        (ids, torch.ones(1, 2, dtype=torch.bool), "does not match"),
        (ids, torch.tensor([[True, True, False]]), "left-padded"),
        (ids, torch.tensor([[0, 2, 1]]), "0/1"),
    ]
    for prompts, mask, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            generate(model, prompts, mask, config)
        assert "\n" not in str(info.value)
    hot = SamplerConfig(gen_length=4, steps=4, block_length=4, temperature=1.0)
    with pytest.raises(ValueError, match="Generator"):
        generate(model, ids, None, hot)


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize(("temperature", "remasking"), [(0.0, "low_confidence"), (0.8, "random")])
def test_schedule_blocks_prompt_and_masks(temperature, remasking):
    model = TinyBidirectional()
    ids, mask = left_pad(_prompts(), PAD)
    config = SamplerConfig(
        gen_length=20, block_length=10, steps=8, temperature=temperature, remasking=remasking
    )
    out, snapshots = _record(model, ids, mask, config, torch.Generator().manual_seed(0))
    P, L = ids.shape[1], config.gen_length
    assert len(snapshots) == config.steps
    assert torch.equal(out.sequences[:, :P], ids)  # prompt untouched
    assert not (out.completion_ids == MASK).any()  # no mask token left
    masked_before = torch.full((ids.shape[0],), L)
    committed = []
    for step, x in enumerate(snapshots):
        assert torch.equal(x[:, :P], ids)
        response_masked = x[:, P:] == MASK  # (B, L)
        committed.append((masked_before - response_masked.sum(1)).tolist())
        masked_before = response_masked.sum(1)
        block = step // config.steps_per_block
        done, later = slice(0, block * 10), slice((block + 1) * 10, L)
        assert not response_masked[:, done].any()  # earlier blocks complete
        assert response_masked[:, later].all()  # later blocks untouched
    expected = [3, 3, 2, 2, 3, 3, 2, 2]
    assert committed == [[k] * ids.shape[0] for k in expected]
    # a committed token never changes afterwards
    for before, after in zip(snapshots, snapshots[1:], strict=False):
        fixed = before != MASK
        assert torch.equal(after[fixed], before[fixed])
    assert torch.equal(snapshots[-1], out.sequences)


def test_generation_fields():
    model = TinyBidirectional()
    ids, mask = left_pad(_prompts(), PAD)
    config = SamplerConfig(gen_length=8, steps=4, block_length=8)
    out = generate(model, ids, mask, config)
    B, P, L = ids.shape[0], ids.shape[1], 8
    assert out.sequences.shape == (B, P + L) and out.completion_ids.shape == (B, L)
    assert out.prompt_length == P
    assert torch.equal(out.completion_ids, out.sequences[:, P:])
    assert out.prompt_mask[:, :P].all() and not out.prompt_mask[:, P:].any()
    assert torch.equal(out.attention_mask[:, :P], mask) and out.attention_mask[:, P:].all()
    as_ints = generate(model, ids.int(), mask.long(), config)  # 0/1 masks and int32 ids work
    assert torch.equal(as_ints.sequences, out.sequences)


def test_low_confidence_order_and_ties():
    # confidence rises to the right: each block is filled right to left
    rising = Scripted(_fixed_scores(torch.arange(32, dtype=torch.float64) * 0.1))
    config = SamplerConfig(gen_length=8, block_length=4, steps=8)
    prompts = torch.tensor([[1, 2]])
    _, snaps = _record(rising, prompts, None, config)
    first_unmasked = [(x[0, 2:] != MASK).nonzero().flatten().tolist() for x in snaps]
    assert first_unmasked[:4] == [[3], [2, 3], [1, 2, 3], [0, 1, 2, 3]]
    assert first_unmasked[4] == [0, 1, 2, 3, 7]
    # equal confidence everywhere: the leftmost masked position goes first
    flat = Scripted(_fixed_scores(torch.zeros(32, dtype=torch.float64)))
    _, snaps = _record(flat, prompts, None, config)
    first_unmasked = [(x[0, 2:] != MASK).nonzero().flatten().tolist() for x in snaps]
    assert first_unmasked[:3] == [[0], [0, 1], [0, 1, 2]]


def test_random_remasking_order_depends_on_seed_only():
    rising = Scripted(_fixed_scores(torch.arange(32, dtype=torch.float64) * 0.1))
    config = SamplerConfig(gen_length=8, block_length=8, steps=8, remasking="random")
    prompts = torch.tensor([[1, 2], [3, 4]])

    def order(seed):
        _, snaps = _record(rising, prompts, None, config, torch.Generator().manual_seed(seed))
        return [(x[:, 2:] != MASK).sum().item() for x in snaps], [x[:, 2:] for x in snaps]

    counts, first = order(0)
    assert counts == [2 * k for k in range(1, 9)]
    assert all(torch.equal(a, b) for a, b in zip(first, order(0)[1], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, order(1)[1], strict=True))
    low = SamplerConfig(gen_length=8, block_length=8, steps=8)
    _, greedy_snaps = _record(rising, prompts, None, low)
    assert any(not torch.equal(a, b[:, 2:]) for a, b in zip(first, greedy_snaps, strict=True))


def test_mask_token_never_predicted_and_eval_mode_restored():
    def script(input_ids):
        logits = torch.zeros(*input_ids.shape, V, dtype=torch.float64)
        logits[..., MASK] = 50.0
        logits[..., 3] = 1.0
        return logits

    model = Scripted(script)
    model.train()
    config = SamplerConfig(gen_length=4, steps=2, block_length=4)
    out = generate(model, torch.tensor([[1]]), None, config)
    assert out.completion_ids.tolist() == [[3, 3, 3, 3]]
    assert model.training and model.modes == [False, False]

    def boom(done, total, x):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        generate(model, torch.tensor([[1]]), None, config, progress=boom)
    assert model.training


# ---------------------------------------------------------------- determinism and batching


def test_same_seed_same_output_different_seed_differs():
    model = TinyBidirectional()
    ids, mask = left_pad(_prompts(), PAD)
    config = SamplerConfig(gen_length=16, block_length=8, steps=8, temperature=1.0)

    def run(seed):
        return generate(model, ids, mask, config, torch.Generator().manual_seed(seed)).sequences

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_greedy_is_seed_independent():
    model = TinyBidirectional()
    ids, mask = left_pad(_prompts(), PAD)
    config = SamplerConfig(gen_length=16, block_length=8, steps=8)
    runs = [generate(model, ids, mask, config, torch.Generator().manual_seed(s)) for s in (0, 1)]
    runs.append(generate(model, ids, mask, config, None))
    assert all(torch.equal(r.sequences, runs[0].sequences) for r in runs)


@pytest.mark.parametrize("block_length", [4, 12])
def test_left_padded_batch_equals_prompts_one_by_one(block_length):
    model = TinyBidirectional(seed=2)
    prompts = _prompts(lengths=(3, 7, 1, 5), seed=5)
    ids, mask = left_pad(prompts, PAD)
    config = SamplerConfig(gen_length=12, block_length=block_length, steps=6)
    batched = generate(model, ids, mask, config)
    for row, prompt in enumerate(prompts):
        alone = generate(model, torch.tensor([prompt]), None, config)
        assert torch.equal(batched.completion_ids[row], alone.completion_ids[0]), row
        assert batched.eos_position[row] == alone.eos_position[0]
    # the batch is not trivially constant: rows differ from one another
    assert len({tuple(r) for r in batched.completion_ids.tolist()}) > 1


# ---------------------------------------------------------------- Gumbel-max, EOS, decoding


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_gumbel_max_samples_softmax_over_non_mask_tokens(temperature):
    scores = torch.full((V,), -math.inf, dtype=torch.float64)
    scores[:4] = torch.tensor([0.0, 1.0, -0.5, 0.3], dtype=torch.float64)
    scores[MASK] = 5.0  # excluded by the sampler

    def script(input_ids):
        return scores.expand(*input_ids.shape, V).clone()

    n = 20000
    config = SamplerConfig(gen_length=1, steps=1, block_length=1, temperature=temperature)
    out = generate(
        Scripted(script), torch.ones(n, 1, dtype=torch.long), None, config,
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    freq = torch.bincount(out.completion_ids[:, 0], minlength=V)[:4].double() / n
    expected = torch.softmax(scores[:4] / temperature, dim=0)
    assert torch.allclose(freq, expected, atol=0.015), (freq, expected)


def test_eos_position_lengths_and_decoding():
    targets = torch.tensor([[1, 2, EOS, 3, EOS, EOS], [1, 2, 3, 1, 2, 3], [EOS] * 6])

    def script(input_ids):
        logits = torch.zeros(*input_ids.shape, V, dtype=torch.float64)
        P = input_ids.shape[1] - targets.shape[1]
        logits[:, P:].scatter_(2, targets.unsqueeze(-1), 5.0)
        return logits

    config = SamplerConfig(gen_length=6, steps=3, block_length=6)
    out = generate(Scripted(script), torch.ones(3, 2, dtype=torch.long), None, config)
    assert torch.equal(out.completion_ids, targets)
    assert out.eos_position.tolist() == [2, 6, 0] and out.lengths.tolist() == [2, 6, 0]

    class Tokenizer:
        def decode(self, ids, skip_special_tokens=False):
            return " ".join(str(i) for i in ids)

    assert decode_completions(Tokenizer(), out) == ["1 2", "1 2 3 1 2 3", ""]

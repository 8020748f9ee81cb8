"""Masked-diffusion SFT: the loss against a hand computation, masking, a tiny run, bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import InputRecorder, tiny_model

from bgpo.config import ConfigError, field_paths, load
from bgpo.models import load_model
from bgpo.sft import ALIASES, SFTConfig, build_data, main, reference_answers, run_sft, sft_loss
from bgpo.sft_config import DataSection
from bgpo.tasks import get_task


def fixed_batch():
    """Three rows, prompt length 3 (row 0 left-padded by one), response length 5."""
    ids = torch.tensor([[0, 5, 6, 7, 8, 1, 1, 1],
                        [4, 9, 3, 10, 11, 4, 1, 1],
                        [6, 6, 5, 3, 4, 5, 6, 7]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 0] = False
    return ids, mask, 3


def test_sft_loss_matches_hand_computation():
    model = tiny_model()
    ids, attn, p = fixed_batch()
    loss, metrics = sft_loss(model, ids, attn, p, torch.Generator().manual_seed(3))

    g = torch.Generator().manual_seed(3)  # the documented draw order: t (B,), then u (B, L)
    t = (1.0 - torch.rand(3, generator=g, dtype=torch.float64)).tolist()
    u = torch.rand(3, 5, generator=g, dtype=torch.float64).tolist()
    total, n_masked = 0.0, 0
    for b in range(3):
        masked = [i for i in range(5) if u[b][i] < t[b]]
        n_masked += len(masked)
        noisy = ids[b].clone()
        for i in masked:
            noisy[p + i] = 2  # the mask token
        logits = model(input_ids=noisy[None], attention_mask=attn[b][None]).logits[0].tolist()
        nll = 0.0
        for i in masked:
            row = logits[p + i]
            log_z = math.log(sum(math.exp(v) for v in row))
            nll -= row[int(ids[b, p + i])] - log_z
        total += nll / (t[b] * 5)
    assert n_masked > 0 and metrics["masked_tokens"] == n_masked
    assert loss.item() == pytest.approx(total / 3, rel=1e-12, abs=0)
    assert metrics["t_mean"] == pytest.approx(sum(t) / 3, rel=1e-15)


def test_loss_is_differentiable_and_zero_mask_rows_count_zero():
    model = tiny_model()
    ids, attn, p = fixed_batch()
    loss, _ = sft_loss(model, ids, attn, p, torch.Generator().manual_seed(0))
    loss.backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in model.parameters())


def test_prompt_and_padding_are_never_masked():
    spy = InputRecorder(tiny_model())
    ids, attn, p = fixed_batch()
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        sft_loss(spy, ids, attn, p, g)
    seen = torch.stack(spy.seen)  # (40, B, P+L)
    assert (seen[:, :, :p] == ids[:, :p]).all()
    masked = seen[:, :, p:] == 2
    assert masked.any() and (~masked).any()
    assert ((seen[:, :, p:] == ids[:, p:]) | masked).all()


def tiny_args(out, *extra):
    return ["model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.mlp_hidden_size=32",
            "train.steps=3", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=1",
            "data.train_size=16", "data.mix_train_size=8", "eval.size=4", "eval.every=2",
            "eval.stop_at_accuracy_min=null", f"train.output_dir={out}", *extra]


def test_tiny_run_writes_a_loadable_checkpoint_deterministically(tmp_path):
    rng_before = torch.get_rng_state()
    out = run_sft(load(SFTConfig, None, tiny_args(tmp_path / "a"), ALIASES))
    assert torch.equal(rng_before, torch.get_rng_state())  # the global RNG is neither used nor reseeded
    run = tmp_path / "a"
    assert out["steps"] == 3 and not out["stopped_in_window"] and out["eval_size"] == 4
    assert {"config.yaml", "metrics.jsonl", "generations.jsonl", "checkpoint"} <= {
        q.name for q in run.iterdir()}
    records = [__import__("json").loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 3]
    assert [r["kind"] for r in records].count("train") == 3 and records[-1]["kind"] == "final"
    resolved = load(SFTConfig, str(run / "config.yaml"), [], ALIASES)
    assert resolved.model.d_model == 16 and resolved.train.steps == 3
    model, tokenizer = load_model(str(run / "checkpoint"))
    assert model.config.d_model == 16 and tokenizer.mask_token_id == model.config.mask_token_id == 2
    again = run_sft(load(SFTConfig, None, tiny_args(tmp_path / "b"), ALIASES))
    assert again["accuracy"] == out["accuracy"]
    a = (run / "checkpoint" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "checkpoint" / "model.safetensors").read_bytes()


def test_run_stops_when_accuracy_enters_the_window_and_never_overwrites(tmp_path):
    window = ["eval.stop_at_accuracy_min=0.0", "eval.stop_at_accuracy_max=1.0"]
    out = run_sft(load(SFTConfig, None, tiny_args(tmp_path / "run", *window), ALIASES))
    assert out["steps"] == 2 and out["stopped_in_window"] and out["run_dir"] == str(tmp_path / "run")
    again = run_sft(load(SFTConfig, None, tiny_args(tmp_path / "run", *window), ALIASES))
    assert again["run_dir"] == str(tmp_path / "run-2")
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.parametrize("argv, error, words", [
    (["model.init_from=/no/such/checkpoint"], FileNotFoundError, "model.init_from"),
    (["no_such_key=1"], ConfigError, "no_such_key"),
    (["data.task_options={max_value: 0}"], ConfigError, "data.task_options"),
    (["eval.gen_length=10", "eval.block_length=4"], ConfigError, "block_length"),
    (["data.lazy_fraction=1.5"], ConfigError, "lazy_fraction"),
    (["data.task=sudoku", "data.lazy_fraction=0.5"], ConfigError, "lazy_fraction"),
])
def test_bad_input_is_a_one_line_error(tmp_path, argv, error, words):
    with pytest.raises(error) as info:
        main([*argv, f"train.output_dir={tmp_path / 'run'}", "data.train_size=4", "eval.size=2"])
    assert "\n" not in str(info.value) and words in str(info.value)
    assert not (tmp_path / "run").exists()  # a failed start writes nothing


def test_help_lists_every_field(capsys):
    main(["--help"])
    text = capsys.readouterr().out
    for path in field_paths(SFTConfig):
        assert f"  {path.split('.')[1]} = " in text
    assert len(dataclasses.fields(SFTConfig)) == 4


def test_lazy_teacher_replaces_a_seeded_share_of_the_answers():
    task = get_task("countdown", prompt_style="compact", max_value=20, max_target=60)
    examples = task.examples("train", 200, seed=0)
    clean = reference_answers(task, examples)
    assert clean == [e["solution"] for e in examples]
    lazy = reference_answers(task, examples, lazy_fraction=0.3, seed=0)
    changed = [i for i, (a, b) in enumerate(zip(clean, lazy, strict=True)) if a != b]
    summed = [i for i, e in enumerate(examples) if lazy[i] == "+".join(map(str, e["numbers"]))]
    # 60 answers replaced, except where the solver's answer already was the in-order sum
    assert len(summed) >= 60 and set(changed) <= set(summed) and len(changed) >= 55
    assert reference_answers(task, examples, lazy_fraction=0.3, seed=0) == lazy  # deterministic
    assert reference_answers(task, examples, lazy_fraction=0.3, seed=1) != lazy  # seeded
    assert reference_answers(task, examples, lazy_fraction=1.0, seed=0) == [
        "+".join(map(str, e["numbers"])) for e in examples]
    rewards = task.score(examples, lazy)
    wrong = [i for i, r in enumerate(rewards) if not task.is_correct(r)]
    # a lazy answer is right exactly when the numbers sum to the target
    assert wrong and all(sum(examples[i]["numbers"]) != examples[i]["target"] for i in wrong)
    d1 = get_task("countdown", prompt_style="d1", max_value=20, max_target=60)
    tagged = reference_answers(d1, examples[:10], lazy_fraction=1.0)
    assert tagged[0] == "<answer>\n" + "+".join(map(str, examples[0]["numbers"])) + "\n</answer>"


def test_lazy_answers_reach_the_training_pool(tmp_path):
    from bgpo.models import char_tokenizer
    tok = char_tokenizer()
    cfg = DataSection(train_size=50, mix_task=None, lazy_fraction=1.0)
    task, pools, _ = build_data(cfg, tok, seed=0)
    examples = task.examples("train", 50, seed=0)
    first = tok.decode(pools[0].responses[0].tolist(), skip_special_tokens=True)
    assert first == "+".join(map(str, examples[0]["numbers"]))


def test_lazy_fraction_on_a_task_without_a_lazy_teacher_is_an_error():
    sudoku = get_task("sudoku", prompt_style="compact")
    examples = sudoku.examples("train", 4, seed=0)
    assert reference_answers(sudoku, examples, lazy_fraction=0.0) == [e["solution"] for e in examples]
    with pytest.raises(ValueError, match="sudoku: no lazy teacher"):
        reference_answers(sudoku, examples, lazy_fraction=0.5)

"""Trainer smoke tests, config parsing and the CLI's error handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from bgpo import cli
from bgpo.config import ConfigError
from bgpo.models import LLaDAConfig, LLaDAModelLM, char_tokenizer, load_model
from bgpo.train_config import load_train_config
from bgpo.trainer import train

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    tok = char_tokenizer()
    torch.manual_seed(0)
    model = LLaDAModelLM(LLaDAConfig(vocab_size=len(tok), d_model=32, n_heads=2, n_layers=1,
                                     mlp_hidden_size=64))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _overrides(ckpt, out, *extra):
    return [f"model.path={ckpt}", f"train.output_dir={out}", "train.steps=2", "train.prompts_per_step=2",
            "train.num_generations=4", "task.eval_size=4", "task.train_size=20", "algo.n_t=2",
            "rollout.gen_length=8", "rollout.steps=4", "rollout.block_length=8",
            f"task.reward={os.path.join(HERE, 'rewards_for_tests.py')}:digit_fraction", *extra]


@pytest.mark.parametrize("algo,mu", [("bgpo", 1), ("vrpo", 2), ("diffu-grpo", 1)])
def test_two_step_training_changes_parameters_and_writes_the_run(tiny_checkpoint, tmp_path, algo, mu):
    out = tmp_path / "run"
    cfg = load_train_config(None, _overrides(tiny_checkpoint, out, f"algo.name={algo}", f"train.mu={mu}"))
    before = {k: v.clone() for k, v in load_model(tiny_checkpoint)[0].state_dict().items()}
    summary = train(cfg)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:
        assert all(k in m for k in ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length",
                                    "accuracy", "time/rollout", "time/update", "peak_memory_mib"))
        assert torch.isfinite(torch.tensor(m["loss"]))
    assert lines[0]["samples"] > 0  # the digit reward varies inside groups: not all skipped
    after = load_model(str(out / "checkpoint"))[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert set(os.listdir(out)) >= {"config.yaml", "metrics.jsonl", "eval.jsonl", "generations.jsonl",
                                    "curves.png", "summary.json", "checkpoint"}
    assert summary["steps_done"] == 2 and "accuracy_before" in summary
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["algo"]["name"] == algo and resolved["train"]["mu"] == mu


def test_existing_run_directory_is_never_overwritten(tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("precious\n")
    train(load_train_config(None, _overrides(tiny_checkpoint, out, "train.steps=1")))
    assert (out / "metrics.jsonl").read_text() == "precious\n"
    assert (tmp_path / "run-2" / "summary.json").exists()


def test_config_files_overrides_aliases_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algo:\n  name: vrpo\n  n_t: 4\ntrain:\n  lr: 1.0e-5\n")
    cfg = load_train_config(str(path), ["max_completion_length=32", "diffusion_steps=8", "block_length=8",
                                        "n_t=2", "num_generations=4"])
    assert (cfg.algo.name, cfg.algo.n_t, cfg.train.lr) == ("vrpo", 2, 1e-5)
    assert (cfg.rollout.gen_length, cfg.rollout.steps, cfg.train.num_generations) == (32, 8, 4)
    with pytest.raises(ConfigError, match=r"unknown config key 'algo.nt'; did you mean algo.n_t"):
        load_train_config(None, ["algo.nt=3"])
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        load_train_config(None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="ambiguous"):
        load_train_config(None, ["steps=3"])
    with pytest.raises(ConfigError, match="must divide the rollout batch"):
        load_train_config(None, ["train.mu=3"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"rollout.gen_length \(10\) must be a multiple"):
        load_train_config(None, ["rollout.gen_length=10"])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["train", "algo.n_tt=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config key 'algo.n_tt'" in err
    assert cli.main(["eval", f"model.path={tmp_path / 'nope'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["train", "algo.name=ppo"]) == 2
    assert "unknown algorithm 'ppo'" in capsys.readouterr().err


def test_cli_help_lists_every_field():
    done = subprocess.run([sys.executable, "-m", "bgpo.cli", "train", "--help"], capture_output=True,
                          text=True, check=True)
    for field in ("n_t", "mc_batch_size", "num_generations", "gen_length", "eval_every", "prompt_style"):
        assert field in done.stdout


def test_chat_template_flag_needs_a_template():
    from bgpo.evaluate import encode_prompts

    tok = char_tokenizer()
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompts(tok, ["1 2>3="], "cpu", chat_template=True)
    tok.chat_template = "{% for m in messages %}<{{ m['content'] }}>{% endfor %}"
    ids, mask = encode_prompts(tok, ["1 2>3=", "9>9="], "cpu", chat_template=True)
    assert tok.decode(ids[0][mask[0]]) == "<1 2>3=>" and not mask[1, 0]


def _on_call(monkeypatch, name: str, n: int, action) -> None:
    """Make ``bgpo.trainer.<name>`` run ``action()`` just before its ``n``-th call."""
    from bgpo import trainer

    real, calls = getattr(trainer, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            action()
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, name, wrapper)


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


def _sigint(times: int = 1):
    import signal

    def send():
        for _ in range(times):
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C
    return send


def test_ctrl_c_leaves_a_usable_run_directory(tiny_checkpoint, tmp_path, monkeypatch):
    _on_call(monkeypatch, "collect_rollouts", 2, _raise_keyboard_interrupt)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(load_train_config(None, _overrides(tiny_checkpoint, out, "train.steps=5")))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted_at_step"] == 2 and summary["steps_done"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    load_model(str(out / "checkpoint"))  # the saved checkpoint loads


# --- exact resume -------------------------------------------------------------------------------

_TRAJECTORY_KEYS = ("reward", "loss", "objective", "grad_norm", "elbo_mean", "samples",
                    "completions/mean_length")


def _params(run_dir):
    return load_model(str(run_dir / "checkpoint"))[0].state_dict()


def _trajectory(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], *(m[k] for k in _TRAJECTORY_KEYS)) for m in lines]


@pytest.fixture(scope="module", params=[("bgpo", 1, 0), ("diffu-grpo", 2, 0), ("bgpo", 1, 2)],
                ids=["bgpo", "diffu-grpo-mu2", "bgpo-lora"])
def straight_run(request, tiny_checkpoint, tmp_path_factory):
    """Four steps without a stop: the trajectory every resumed run must repeat bit for bit."""
    algo, mu, lora_rank = request.param
    extra = (f"algo.name={algo}", f"train.mu={mu}", f"model.lora_rank={lora_rank}", "train.steps=4",
             "train.eval_every=0")
    out = tmp_path_factory.mktemp("straight") / "run"
    train(load_train_config(None, _overrides(tiny_checkpoint, out, *extra)))
    return out, extra


def _assert_same_run(a, b):
    assert _trajectory(a) == _trajectory(b)
    pa, pb = _params(a), _params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def _resume(run_dir, *overrides):
    cfg = load_train_config(str(run_dir / "config.yaml"), ["train.steps=4", *overrides])
    return train(cfg, resume=str(run_dir))


def test_finished_run_extended_by_resume_repeats_the_straight_run(straight_run, tiny_checkpoint, tmp_path):
    straight, extra = straight_run
    out = tmp_path / "run"
    train(load_train_config(None, _overrides(tiny_checkpoint, out, *extra, "train.steps=2")))
    summary = _resume(out)
    assert summary["steps_done"] == 4
    _assert_same_run(straight, out)
    first = json.loads((straight / "summary.json").read_text())
    assert summary["accuracy_before"] == first["accuracy_before"]


def test_ctrl_c_then_resume_repeats_the_straight_run(straight_run, tiny_checkpoint, tmp_path, monkeypatch):
    straight, extra = straight_run
    _on_call(monkeypatch, "collect_rollouts", 3, _raise_keyboard_interrupt)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(load_train_config(None, _overrides(tiny_checkpoint, out, *extra)))
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 2
    monkeypatch.undo()
    _resume(out)
    _assert_same_run(straight, out)


def test_sigint_during_an_update_lets_it_finish_and_resume_is_exact(straight_run, tiny_checkpoint, tmp_path,
                                                                     monkeypatch):
    straight, extra = straight_run
    _on_call(monkeypatch, "optimise", 2, _sigint())  # a real Ctrl-C, delivered as step 2's update starts
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(load_train_config(None, _overrides(tiny_checkpoint, out, *extra)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted_at_step"] == 2 and summary["steps_done"] == 2  # step 2's update finished
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 2
    monkeypatch.undo()
    _resume(out)
    _assert_same_run(straight, out)


def test_resume_drops_records_written_after_the_saved_state(straight_run, tiny_checkpoint, tmp_path):
    straight, extra = straight_run
    out = tmp_path / "run"
    train(load_train_config(None, _overrides(tiny_checkpoint, out, *extra, "train.save_every=2")))
    # Put the step-2 state back in place, as if the process had died after step 4's records.
    mid = tmp_path / "mid"
    train(load_train_config(None, _overrides(tiny_checkpoint, mid, *extra, "train.steps=2")))
    os.replace(mid / "state.pt", out / "state.pt")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "rew')  # a torn last line
    _resume(out)
    _assert_same_run(straight, out)
    evals = [json.loads(x)["step"] for x in (out / "eval.jsonl").read_text().splitlines()]
    assert evals == [0, 4]


def test_resume_errors_are_one_line(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    train(load_train_config(None, _overrides(tiny_checkpoint, out)))
    with pytest.raises(ValueError, match="already did 2 steps; raise train.steps"):
        train(load_train_config(str(out / "config.yaml"), []), resume=str(out))
    with pytest.raises(ValueError, match="does not match this model"):
        cfg = load_train_config(str(out / "config.yaml"), ["train.steps=3", "model.lora_rank=2"])
        train(cfg, resume=str(out))
    with pytest.raises(ValueError, match="drew from 20 training prompts, this config gives 30"):
        cfg = load_train_config(str(out / "config.yaml"), ["train.steps=3", "task.train_size=30"])
        train(cfg, resume=str(out))
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.yaml does not exist" in err


def test_second_sigint_stops_inside_the_update_without_a_torn_state(tiny_checkpoint, tmp_path, monkeypatch):
    import signal

    _on_call(monkeypatch, "optimise", 2, _sigint(times=2))  # the second one stops at once
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(load_train_config(None, _overrides(tiny_checkpoint, out, "train.steps=4")))
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 1
    assert not (out / "state.pt").exists()  # no state half-way through step 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sampled_evaluation_reports_accuracy_and_pass_at_k_of_its_own_samples():
    from bgpo.evaluate import sample_evaluate
    from bgpo.sampler import SamplerConfig
    from bgpo.tasks import get_task
    from bgpo.train_config import SHIPPED_MODEL, TrainConfig

    model, tok = load_model(SHIPPED_MODEL)
    task = get_task("countdown", prompt_style="compact", **TrainConfig().task.options)
    examples = task.examples("test", 24, seed=0)
    config = SamplerConfig(16, 16, 16, 1.0)

    def run(k, seed):
        return sample_evaluate(model, tok, task, examples, config, k, torch.Generator().manual_seed(seed),
                               batch_size=40)

    result = run(4, 0)
    correct = [[task.is_correct(r) for r in row] for row in result["rewards"]]
    assert len(correct) == 24 and all(len(row) == 4 for row in correct)
    assert result["accuracy"] == sum(map(sum, correct)) / 96
    assert result["pass@4"] == sum(any(row) for row in correct) / 24
    assert 0 < result["accuracy"] < result["pass@4"] < 1  # the shipped model solves some, not all
    assert run(4, 0) == result  # seeded: identical
    one = run(1, 0)
    assert one["pass@1"] == one["accuracy"]
    with pytest.raises(ValueError, match="temperature > 0"):
        sample_evaluate(model, tok, task, examples, SamplerConfig(16, 16, 16, 0.0), 2, torch.Generator())


def test_lora_training_changes_only_block_projections_and_saves_a_plain_checkpoint(tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    train(load_train_config(None, _overrides(tiny_checkpoint, out, "model.lora_rank=2", "train.steps=3")))
    before = load_model(tiny_checkpoint)[0].state_dict()
    after = load_model(str(out / "checkpoint"))[0].state_dict()  # plain: adapters merged
    assert set(after) == set(before)
    from bgpo.models.lora import DEFAULT_TARGETS

    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adaptable = {f"model.transformer.blocks.0.{t}.weight" for t in DEFAULT_TARGETS}  # one block
    assert changed and changed <= adaptable  # embeddings, norms and the output head untouched
    state = torch.load(out / "state.pt", weights_only=True)["model"]
    assert state and all("lora_" in k for k in state)  # the frozen base is not stored again


def test_greedy_in_group_puts_the_greedy_decode_first_in_every_group(tiny_checkpoint):
    from dataclasses import fields

    from bgpo.evaluate import encode_prompts
    from bgpo.sampler import Generation, SamplerConfig, generate
    from bgpo.trainer import generate_groups

    model, tok = load_model(tiny_checkpoint)
    prompts = [p for p in ("1 2>3=", "10 4 7>21=") for _ in range(3)]
    ids, mask = encode_prompts(tok, prompts, "cpu")
    sampled = SamplerConfig(8, 4, 8, 1.0)
    got = generate_groups(model, ids, mask, sampled, torch.Generator().manual_seed(5), 3, greedy_first=True)
    first, rest = torch.tensor([0, 3]), torch.tensor([1, 2, 4, 5])
    greedy = generate(model, ids[first], mask[first], SamplerConfig(8, 4, 8, 0.0))
    others = generate(model, ids[rest], mask[rest], sampled, generator=torch.Generator().manual_seed(5))
    for f in fields(Generation):
        assert torch.equal(getattr(got, f.name)[first], getattr(greedy, f.name)), f.name
        assert torch.equal(getattr(got, f.name)[rest], getattr(others, f.name)), f.name
    plain = generate_groups(model, ids, mask, sampled, torch.Generator().manual_seed(5), 3, False)
    direct = generate(model, ids, mask, sampled, generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain.sequences, direct.sequences)

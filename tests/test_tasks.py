"""Tasks: hand-checked rewards, the safe parser, generators, splits, loaders, user rewards."""

from __future__ import annotations

import json
import random
from fractions import Fraction

import numpy as np
import pytest

from bgpo.tasks import (
    CHARSET,
    CustomRewardTask,
    RewardFn,
    TaskDataError,
    get_task,
    load_examples,
    load_reward_fn,
)
from bgpo.tasks.arith import MAX_CHARS, BinOp, Neg, Num, ParseError, evaluate, literals, parse, to_text
from bgpo.tasks.countdown import solve
from bgpo.tasks.sudoku import all_grids, count_solutions, is_valid_grid

D1_CD = get_task("countdown")
COMPACT_CD = get_task("countdown", prompt_style="compact")
D1_SD = get_task("sudoku")
COMPACT_SD = get_task("sudoku", prompt_style="compact")


def cd_reward(task, completion, numbers=(3, 5, 7), target=22):
    return task.reward(["p"], [completion], numbers=[list(numbers)], target=[target])[0]


# ---------------------------------------------------------------- Countdown rewards


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<answer>3*5+7</answer>", 1.0),
        ("<reasoning>3*5=15, 15+7=22</reasoning>\n<answer>\n(5 * 3) + 7\n</answer>", 1.0),
        ("<answer>3*5+7 = 22</answer>", 1.0),  # "= target" suffix accepted
        ("<answer>1+1</answer> then <answer>7+5*3</answer>", 1.0),  # last answer wins
        ("<answer>3*5+7 = 23</answer>", 0.1),  # claims a value other than the target
        ("<answer>3+5+7</answer>", 0.1),  # wrong value
        ("<answer>3*5+7+3-3</answer>", 0.1),  # a number reused
        ("<answer>3*7+1</answer>", 0.1),  # a number not given, one missing
        ("<answer>15+7</answer>", 0.1),  # numbers missing
        ("<answer>22</answer>", 0.1),  # a bare number is an equation, a wrong one
        ("<answer>3*5+7 = 15+7</answer>", 0.0),  # only an integer may follow '='
        ("<answer>3*5+</answer>", 0.0),  # malformed
        ("<answer>(3*5+7</answer>", 0.0),  # unbalanced
        ("<answer>three times five plus seven</answer>", 0.0),
        ("<answer></answer>", 0.0),
        ("<answer>3*5+7", 0.0),  # tag never closed
        ("3*5+7", 0.0),  # d1 style needs the tags
        ("<answer>3.0*5+7</answer>", 0.0),  # decimals are not admitted
        ("<answer>3**5+7</answer>", 0.0),
        ("<answer>__import__('os').system('true')</answer>", 0.0),
    ],
)
def test_countdown_reward_d1(completion, expected):
    assert cd_reward(D1_CD, completion) == expected


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("3*5+7", 1.0),
        ("  3*5+7\n12+", 1.0),  # only the first line is the answer
        ("<answer>7+3*5</answer>", 1.0),
        ("3*5+7=22", 1.0),
        ("3*5-7", 0.1),
        ("", 0.0),
        ("3 5 7", 0.0),
    ],
)
def test_countdown_reward_compact(completion, expected):
    assert cd_reward(COMPACT_CD, completion) == expected


def test_countdown_division_by_zero_is_present_but_wrong():
    assert cd_reward(D1_CD, "<answer>7/(5-5)+3</answer>", (3, 5, 5, 7), 10) == 0.1


def test_countdown_rational_intermediates_are_exact():
    # Non-integer intermediate results are allowed and exact (no float tolerance).
    assert cd_reward(D1_CD, "<answer>(1/3)*3</answer>", (1, 3, 3), 1) == 1.0
    assert cd_reward(D1_CD, "<answer>7/3*3</answer>", (7, 3, 3), 7) == 1.0
    assert cd_reward(D1_CD, "<answer>5*(5-1/5)</answer>", (1, 5, 5, 5), 24) == 1.0
    # 7/3 is not 2: a value that is merely close is wrong.
    assert cd_reward(D1_CD, "<answer>7/3+0</answer>", (7, 3, 0), 2) == 0.1


def test_countdown_unary_minus_and_chat_completions():
    assert cd_reward(D1_CD, "<answer>-3+5+7</answer>", target=9) == 1.0
    chat = [{"role": "assistant", "content": "<answer>3*5+7</answer>"}]
    assert D1_CD.reward(["p"], [chat], numbers=[[3, 5, 7]], target=[22]) == [1.0]


def test_reward_columns_checked():
    with pytest.raises(ValueError, match="column 'target'"):
        D1_CD.reward(["p"], ["x"], numbers=[[1, 2]])
    with pytest.raises(ValueError, match="'numbers' has 2 entries for 1"):
        D1_CD.reward(["p"], ["x"], numbers=[[1, 2], [3]], target=[3])


def test_metric_comes_from_reward():
    rewards = D1_CD.reward(
        ["p"] * 3,
        ["<answer>3*5+7</answer>", "<answer>3+5+7</answer>", "nothing"],
        numbers=[[3, 5, 7]] * 3,
        target=[22] * 3,
    )
    assert rewards == [1.0, 0.1, 0.0]
    metrics = D1_CD.metrics(rewards)
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["reward"] == pytest.approx(1.1 / 3)


# ---------------------------------------------------------------- the parser


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "x + 1",
        "abs(3)",
        "2**3",
        "(1).real",
        "().__class__",
        "1e3",
        "2.5",
        "1_000",
        "\u0663+1",  # an Arabic-Indic digit
        "2\u00b2",  # a superscript
        "3 4",
        "",
        "()",
        "*3",
    ],
)
def test_parser_refuses(text):
    with pytest.raises(ParseError):
        parse(text)


def test_parser_limits_are_parse_errors():
    with pytest.raises(ParseError):
        parse("(" * 500 + "1" + ")" * 500)
    with pytest.raises(ParseError):
        parse("-" * 500 + "1")
    with pytest.raises(ParseError):
        parse("1+" * MAX_CHARS + "1")


def test_parser_values_and_literals():
    node = parse(" 8 - (3 - -2) * 4 / 6 ")
    assert evaluate(node) == Fraction(8) - Fraction(5 * 4, 6)
    assert literals(node) == [8, 3, 2, 4, 6]
    assert evaluate(parse("10-3-2")) == 5 and evaluate(parse("24/4/3")) == 2
    with pytest.raises(ZeroDivisionError):
        evaluate(parse("1/(2-2)"))


def random_node(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.3:
        return Num(rng.randint(0, 20))
    if rng.random() < 0.15:
        return Neg(random_node(rng, depth - 1))
    op = rng.choice("+-*/")
    return BinOp(op, random_node(rng, depth - 1), random_node(rng, depth - 1))


def test_to_text_round_trips():
    rng = random.Random(0)
    for _ in range(300):
        node = random_node(rng, 4)
        again = parse(to_text(node))
        assert literals(again) == literals(node)
        try:
            value = evaluate(node)
        except ZeroDivisionError:
            with pytest.raises(ZeroDivisionError):
                evaluate(again)
            continue
        assert evaluate(again) == value


# ---------------------------------------------------------------- Countdown data


def test_solve():
    assert solve([1, 1, 1, 1], 100) is None
    for numbers, target in [([10, 1, 2, 3], 9), ([1, 5, 5, 5], 24), ([3, 5, 7], 22)]:
        equation = solve(numbers, target)
        assert cd_reward(COMPACT_CD, equation, numbers, target) == 1.0


def test_countdown_generator_deterministic_and_prefix_stable():
    a = D1_CD.examples("train", 30, seed=3)
    assert a == D1_CD.examples("train", 30, seed=3)
    assert D1_CD.examples("train", 10, seed=3) == a[:10]
    assert a != D1_CD.examples("train", 30, seed=4)


def test_countdown_generated_puzzles_valid_and_reachable():
    task = get_task("countdown", max_value=20, max_target=60, test_fraction=0.3)
    examples = task.examples("train", 150, seed=0) + task.examples("test", 50, seed=0)
    for ex in examples:
        assert 3 <= len(ex["numbers"]) <= 4
        assert all(1 <= x <= 20 for x in ex["numbers"]) and 1 <= ex["target"] <= 60
        assert solve(ex["numbers"], ex["target"]) is not None
        assert cd_reward(task, f"<answer>{ex['solution']}</answer>", ex["numbers"], ex["target"])
    assert task.score(examples, [f"<answer>{e['solution']}</answer>" for e in examples]) == [1.0] * len(
        examples
    )


@pytest.mark.parametrize("task", [D1_CD, D1_SD], ids=["countdown", "sudoku"])
def test_splits_disjoint(task):
    keys = {s: set() for s in ("train", "test")}
    for split in keys:
        for seed in (0, 1):
            keys[split] |= {task.canonical(e) for e in task.examples(split, 150, seed)}
    assert not keys["train"] & keys["test"]
    assert len(keys["test"]) > 150  # seeds give different puzzles


def test_small_puzzle_space_is_reported():
    task = get_task("countdown", max_value=3, max_target=5, max_numbers=3)
    with pytest.raises(ValueError, match="found only .* distinct test puzzles"):
        task.examples("test", 1000, seed=0)


def test_compact_prompts_fit_charset():
    examples = get_task("countdown", prompt_style="compact", max_value=99).examples("train", 50, 0)
    examples += COMPACT_SD.examples("train", 50, 0)
    assert examples[0]["prompt"] == f"{' '.join(map(str, examples[0]['numbers']))}>" + (
        f"{examples[0]['target']}="
    )
    assert examples[-1]["prompt"] == examples[-1]["puzzle"] + ">"
    for ex in examples:
        text = ex["prompt"] + ex["solution"]
        assert set(text) <= set(CHARSET), text
        assert len(ex["prompt"]) <= 20


def test_d1_prompts():
    cd = D1_CD.with_prompt({"numbers": [3, 5, 7], "target": 22})["prompt"]
    assert cd.startswith("Using the numbers [3, 5, 7], write an equation whose value is 22.")
    assert "<reasoning>" in cd and "<answer>" in cd
    sd = D1_SD.prompt({"puzzle": "1200003400120003"})
    assert "1200\n0034\n0012\n0003" in sd and "</answer>" in sd


# ---------------------------------------------------------------- Sudoku


SOLUTION = "1234341221434321"
PUZZLE = "1030041020400301"  # 8 empty cells, unique solution SOLUTION


def sd_reward(task, completion, puzzle=PUZZLE, solution=SOLUTION):
    return task.reward(["p"], [completion], puzzle=[puzzle], solution=[solution])[0]


def test_sudoku_fixture_is_sound():
    assert is_valid_grid(SOLUTION) and count_solutions(PUZZLE) == 1
    assert all(p in ("0", s) for p, s in zip(PUZZLE, SOLUTION, strict=True))


def with_cells(grid: str, changes: dict[int, str]) -> str:
    return "".join(changes.get(i, ch) for i, ch in enumerate(grid))


@pytest.mark.parametrize(
    "completion, expected",
    [
        (f"<answer>{SOLUTION}</answer>", 1.0),
        ("<reasoning>..</reasoning>\n<answer>\n1234\n3412\n2143\n4321\n</answer>", 1.0),
        ("<answer>1 2 | 3 4\n3 4 | 1 2\n----\n2 1 | 4 3\n4 3 | 2 1</answer>", 1.0),
        (f"<answer>{SOLUTION}99</answer>", 1.0),  # digits past the 16th are ignored
        # 2 of the 8 empty cells (indices 1 and 3) wrong
        (f"<answer>{with_cells(SOLUTION, {1: '4', 3: '2'})}</answer>", 0.75),
        # every given cell changed, every empty cell right: givens are not scored
        (f"<answer>{with_cells(SOLUTION, {0: '4', 2: '1', 5: '1', 6: '2'})}</answer>", 1.0),
        (f"<answer>{PUZZLE}</answer>", 0.0),  # nothing filled
        (f"<answer>{SOLUTION[:15]}</answer>", 0.0),  # wrong grid size
        ("<answer>1234\n3412\n2143</answer>", 0.0),  # 3 rows only
        ("<answer>123434122143432</answer>", 0.0),
        (SOLUTION, 0.0),  # d1 style needs the tags
        ("<answer></answer>", 0.0),
    ],
)
def test_sudoku_reward_d1(completion, expected):
    assert sd_reward(D1_SD, completion) == expected


def test_sudoku_reward_compact():
    assert sd_reward(COMPACT_SD, SOLUTION) == 1.0
    assert sd_reward(COMPACT_SD, f" {SOLUTION}\n") == 1.0
    assert sd_reward(COMPACT_SD, with_cells(SOLUTION, {1: "4"})) == 0.875
    assert sd_reward(COMPACT_SD, SOLUTION[:12]) == 0.0


def test_sudoku_generator():
    task = get_task("sudoku", min_empty=6, max_empty=11)
    examples = task.examples("train", 100, seed=5)
    assert examples == task.examples("train", 100, seed=5)
    assert examples != task.examples("train", 100, seed=6)
    for ex in examples:
        assert 6 <= ex["puzzle"].count("0") <= 11
        assert count_solutions(ex["puzzle"], limit=3) == 1
        assert is_valid_grid(ex["solution"])
        assert sd_reward(task, f"<answer>{ex['solution']}</answer>", ex["puzzle"], ex["solution"])
    assert {ex["puzzle"].count("0") for ex in examples} == set(range(6, 12))


def test_all_grids():
    grids = all_grids()
    assert len(grids) == len(set(grids)) == 288
    assert all(is_valid_grid(g) for g in grids)
    assert count_solutions("1234341221434300", limit=5) == 1
    assert count_solutions("1234000000000000", limit=100) > 1
    assert count_solutions("1134000000000000") == 0


# ---------------------------------------------------------------- registry, options


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown task 'chess'; valid: countdown, sudoku"):
        get_task("chess")
    with pytest.raises(ValueError, match="unknown option.*max_valu.*valid: prompt_style"):
        get_task("countdown", max_valu=9)
    with pytest.raises(ValueError, match="prompt_style 'chat'"):
        get_task("sudoku", prompt_style="chat")
    with pytest.raises(ValueError, match="max_empty"):
        get_task("sudoku", max_empty=13)
    with pytest.raises(ValueError, match="min_value <= max_value"):
        get_task("countdown", min_value=10, max_value=5)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        D1_CD.examples("dev", 1, 0)
    with pytest.raises(ValueError, match="option max_value must be int, got '9'"):
        get_task("countdown", max_value="9")
    with pytest.raises(ValueError, match="option test_fraction must be float, got True"):
        get_task("sudoku", test_fraction=True)
    with pytest.raises(ValueError, match="must be an integer >= 0, got -1"):
        D1_SD.examples("train", -1, 0)


# ---------------------------------------------------------------- loaders


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_d1_countdown_jsonl(tmp_path):
    path = write(
        tmp_path / "countdown_cd3_test.jsonl",
        [
            json.dumps({"input": "30,100,93", "output": "23"}),
            "",
            json.dumps({"nums": [3, 5, 7], "target": 22}),
            json.dumps({"numbers": "[1, 2, 3]", "target": 6}),
        ],
    )
    examples = load_examples(path, "countdown")
    got = [(e["numbers"], e["target"]) for e in examples]
    assert got == [([30, 100, 93], 23), ([3, 5, 7], 22), ([1, 2, 3], 6)]
    assert examples[0]["prompt"].startswith("Using the numbers [30, 100, 93]")
    assert load_examples(path, COMPACT_CD, limit=1)[0]["prompt"] == "30 100 93>23="


def test_load_d1_sudoku_csv(tmp_path):
    path = write(
        tmp_path / "4x4_test_sudoku.csv",
        ["Puzzle,Solution", f"{PUZZLE},{SOLUTION}", f"0{SOLUTION[1:]},{SOLUTION}"],
    )
    examples = load_examples(path, "sudoku")
    assert [e["puzzle"] for e in examples] == [PUZZLE, "0" + SOLUTION[1:]]
    ours = write(tmp_path / "ours.jsonl", [json.dumps({"puzzle": PUZZLE, "solution": SOLUTION})])
    assert load_examples(ours, COMPACT_SD)[0]["prompt"] == PUZZLE + ">"


GOOD_CD, HEAD = '{"nums": [1, 2], "target": 3}', "Puzzle,Solution"


@pytest.mark.parametrize(
    "name, lines, where, why",
    [
        ("cd.jsonl", [GOOD_CD, "{oops"], 2, "not JSON"),
        ("cd.jsonl", [GOOD_CD, "", '{"nums": [1, 2]}'], 3, "missing column 'target'"),
        ("cd.jsonl", ['{"nums": [1, 2.5], "target": 3}'], 1, "not an integer"),
        ("cd.jsonl", ['{"input": "1,a", "output": 3}'], 1, "not a list"),
        ("cd.jsonl", ["[1, 2, 3]"], 1, "expected a JSON object"),
        ("sd.csv", [HEAD, f"{PUZZLE},{SOLUTION}", f"{PUZZLE[1:]},{SOLUTION}"], 3, "not 16 digits"),
        ("sd.csv", [HEAD, f"{PUZZLE},{SOLUTION},7"], 2, "more fields"),
        ("sd.csv", [HEAD, f"2{PUZZLE[1:]},{SOLUTION}"], 2, "contradicts"),
        ("sd.csv", [HEAD, f"{PUZZLE},1234123412341234"], 2, "not a valid full"),
        ("sd.csv", [HEAD, f"{PUZZLE},"], 2, "missing column 'solution'"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, name, lines, where, why):
    path = write(tmp_path / name, lines)
    with pytest.raises(TaskDataError, match=why) as err:
        load_examples(path, "countdown" if name.startswith("cd") else "sudoku")
    assert f"{name}:{where}:" in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(TaskDataError, match="no such file"):
        load_examples(tmp_path / "missing.csv", "sudoku")
    with pytest.raises(TaskDataError, match="unsupported file type '.txt'"):
        load_examples(write(tmp_path / "data.txt", ["x"]), "sudoku")
    with pytest.raises(TaskDataError, match="empty.csv: no sudoku rows"):
        load_examples(write(tmp_path / "empty.csv", ["Puzzle,Solution"]), "sudoku")


# ---------------------------------------------------------------- user reward functions


def length_reward(prompts, completions, **columns):
    return [float(len(c)) for c in completions]


def test_reward_fn_validates_output():
    assert RewardFn(length_reward)(["p", "q"], ["ab", "c"]) == [2.0, 1.0]
    assert RewardFn(lambda prompts, completions, **_: np.ones(2))(["p"] * 2, ["a", "b"]) == [1, 1]
    cases = [
        (lambda prompts, completions, **_: [1.0], "returned 1 values for 2"),
        (lambda prompts, completions, **_: "1.0 1.0", "returned str"),
        (lambda prompts, completions, **_: 1.0, "returned float"),
        (lambda prompts, completions, **_: [1.0, None], "None at index 1"),
        (lambda prompts, completions, **_: [1.0, float("nan")], "nan at index 1"),
    ]
    for fn, message in cases:
        with pytest.raises(ValueError, match=message):
            RewardFn(fn, name="mine")(["p", "q"], ["a", "b"])
    with pytest.raises(TypeError, match="callable"):
        RewardFn(3)


def test_reward_fn_receives_columns_by_keyword():
    seen = {}

    def spy(prompts, completions, target, **rest):
        seen.update(prompts=prompts, target=target, rest=sorted(rest))
        return [0.5] * len(completions)

    task = get_task("countdown", reward=spy)
    assert isinstance(task, CustomRewardTask)
    examples = task.examples("test", 2, seed=0)
    assert examples == D1_CD.examples("test", 2, seed=0)
    assert task.score(examples, ["a", "b"]) == [0.5, 0.5]
    assert seen["target"] == [e["target"] for e in examples] and seen["rest"] == ["numbers", "solution"]
    assert task.metrics([0.5, 1.0]) == {"reward": 0.75, "accuracy": 0.5}


def test_load_reward_fn(tmp_path, monkeypatch):
    source = "def score(prompts, completions, **kw):\n    return [1.0] * len(completions)\n"
    (tmp_path / "my_rewards.py").write_text(source)
    by_file = load_reward_fn(f"{tmp_path / 'my_rewards.py'}:score")
    assert by_file(["p"], ["c"]) == [1.0]
    monkeypatch.syspath_prepend(str(tmp_path))
    task = get_task("sudoku", reward="my_rewards:score")
    assert task.reward(["p"], ["c"], puzzle=[PUZZLE], solution=[SOLUTION]) == [1.0]
    for spec, message in [
        ("my_rewards", "expected 'module:function'"),
        ("my_rewards:nope", "has no function 'nope'"),
        ("no_such_module_xyz:f", "cannot import"),
        (f"{tmp_path / 'absent.py'}:f", "no such file"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_reward_fn(spec)

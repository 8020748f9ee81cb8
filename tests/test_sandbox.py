"""The sandbox's pieces: the plain-data codec, result classification, job validation, and
end-to-end runs that reach each status, in both isolation modes."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections import Counter, OrderedDict, namedtuple
from pathlib import Path

import pytest

from bgpo.sandbox import (
    CodeJob,
    Limits,
    Result,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
    classify,
    mbpp_job,
    stdio_job,
    wire,
)

LIMITS = Limits(wall_s=4, cpu_s=2, memory_mb=256, processes=8, output_bytes=4096)
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- codec

def _no_other(value):
    raise TypeError(f"unsupported {type(value).__name__}")


def _roundtrip(value):
    message = wire.read_frame(_reader(wire.pack(wire.encode(value, _no_other))), 1 << 20)
    return wire.decode(message, lambda h: pytest.fail("no references expected"))


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**200, -(2**5000), 3**9000, 0.1, -0.0, math.inf, -math.inf,
    1e308, 5e-324, 1 + 2j, "", "héllo\udcff\x00", b"\x00\xff", bytearray(b"ab"),
    [1, [2, (3, {4})]], (), (1,), {1: "a", (2, 3): [4], "k": None}, {1, 2}, frozenset({"x"}),
    [[[]]],
])
def test_codec_roundtrip_is_exact(value):
    back = _roundtrip(value)
    assert type(back) is type(value)
    assert back == value
    if isinstance(value, float) and value == 0:
        assert math.copysign(1, back) == math.copysign(1, value)


def test_codec_nan_survives():
    assert math.isnan(_roundtrip(math.nan))


def test_codec_subclasses_arrive_as_their_builtin_base():
    point = namedtuple("Point", "x y")
    assert type(_roundtrip(point(1, 2))) is tuple
    assert _roundtrip(Counter("aab")) == {"a": 2, "b": 1}
    assert type(_roundtrip(OrderedDict(a=1))) is dict

    class Sneaky(int):
        def __eq__(self, other):
            return True

    back = _roundtrip(Sneaky(3))
    assert type(back) is int and back == 3 and back != 4


def test_codec_hands_other_objects_to_the_callback():
    marker = object()
    encoded = wire.encode([1, marker], lambda v: ["H", 7, "object"])
    assert encoded == ["L", [1, ["H", 7, "object"]]]
    assert wire.decode(encoded, lambda h: ("ref", h[1])) == [1, ("ref", 7)]


@pytest.mark.parametrize("data", [
    ["X", []], ["L"], ["L", 3], ["D", [[1]]], ["D", [[[1], 2]]], ["I", 5], ["C", "a", 1],
    ["B", "zz"], {"a": 1}, [], [3, 4],
])
def test_codec_rejects_malformed_data(data):
    with pytest.raises(wire.WireError):
        wire.decode(data, lambda h: None)


def test_frames_enforce_the_size_cap_and_detect_truncation():
    frame = wire.pack("x" * 100)
    with pytest.raises(wire.WireError, match="exceeds the cap of 10 bytes"):
        wire.read_frame(_reader(frame), 10)
    with pytest.raises(wire.WireError, match="stream ended"):
        wire.read_frame(_reader(frame[:-1]), 1000)
    assert wire.read_frame(_reader(b""), 10) is None


def _reader(data: bytes):
    state = {"rest": data}

    def read(n):
        chunk, state["rest"] = state["rest"][:n], state["rest"][n:]
        return chunk

    return read


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, message", [
    ({"wall_s": 0}, "Limits.wall_s must be a positive number, got 0"),
    ({"cpu_s": 1.5}, "Limits.cpu_s must be an integer, got 1.5"),
    ({"memory_mb": True}, "Limits.memory_mb must be a number, got True"),
    ({"memory_mb": 32}, "Limits.memory_mb=32 is too small"),
    ({"output_bytes": float("nan")}, "Limits.output_bytes must be a positive number"),
])
def test_limits_reject_bad_values_in_one_line(kwargs, message):
    with pytest.raises(SandboxError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Limits(**kwargs)


def test_job_validation():
    assert CodeJob("x = 1", "assert x == 1").tests == ("assert x == 1",)
    with pytest.raises(SandboxError, match="non-empty sequence"):
        CodeJob("x = 1", ())
    with pytest.raises(SandboxError, match="entry_points must be identifiers"):
        CodeJob("x = 1", ("pass",), entry_points=("not a name",))
    with pytest.raises(SandboxError, match="CodeJob.program must be a str, got bytes"):
        CodeJob(b"x", ("pass",))
    with pytest.raises(SandboxError, match="CodeJob.limits must be a Limits, got dict"):
        CodeJob("x = 1", ("pass",), limits={"wall_s": 1})
    with pytest.raises(SandboxError, match="one of"):
        Result("ok", 0, 1)


def test_result_reward_and_fraction():
    assert Result("passed", 2, 2).reward == 1.0
    failed = Result("failed", 1, 4)
    assert (failed.reward, failed.fraction, failed.passed) == (0.0, 0.25, False)


# ---------------------------------------------------------------- classification

def _facts(verdict, runner=None, **extra):
    return {"verdict": verdict, "status": {"runner": runner or {}, "judge": {}},
            "output": "", "wall_s": 0.5, **extra}


DONE = {"done": True, "program_ended": False}


@pytest.mark.parametrize("facts, status, detail", [
    (_facts([{"test": 0, "ok": True}, {"test": 1, "ok": True}, DONE]), "passed", ""),
    (_facts([{"test": 0, "ok": True}, {"test": 1, "ok": False, "error": "AssertionError"}, DONE]),
     "failed", "test 1 failed: AssertionError"),
    (_facts([{"test": 0, "ok": True}], timed_out=True), "timeout",
     "exceeded the wall-clock limit of 4 s"),
    (_facts([], runner={"signal": 24, "cpu_s": 2.0}), "timeout", "exceeded the CPU limit of 2 s"),
    (_facts([{"load_error": "boom"}, DONE]), "crashed", "boom"),
    (_facts([{"test": 0, "ok": False, "error": "x"}, {"done": True, "program_ended": True}],
            runner={"exit": 0}), "crashed", "the program's process exited with status 0 during"),
    (_facts([{"setup_error": "NameError: y"}, DONE]), "error", "the trusted setup failed"),
    (_facts([{"test": 0, "ok": True}]), "error", "the test process ended without a verdict"),
    ({"error": "sandbox failure: x"}, "error", "sandbox failure: x"),
])
def test_classify(facts, status, detail):
    result = classify(facts, 2 if status != "timeout" else 1, LIMITS)
    assert result.status == status
    assert result.detail.startswith(detail)


def test_classify_needs_every_test_and_the_done_record():
    only_one = _facts([{"test": 0, "ok": True}, DONE])
    assert classify(only_one, 2, LIMITS).status == "error"
    assert classify(only_one, 1, LIMITS).status == "passed"
    no_done = _facts([{"test": 0, "ok": True}])
    assert classify(no_done, 1, LIMITS).status == "error"


# ---------------------------------------------------------------- end to end

def test_rejects_bad_arguments():
    with pytest.raises(SandboxError, match="isolation must be one of"):
        Sandbox(isolation="none")
    with pytest.raises(SandboxError, match="workers must be a positive integer, got 0"):
        Sandbox(workers=0)
    with pytest.raises(SandboxError, match="hidden_paths must be absolute paths, got 'data'"):
        Sandbox(hidden_paths=("data",))
    with pytest.raises(SandboxError, match="hidden path /no/such/dir does not exist"):
        Sandbox(hidden_paths=("/no/such/dir",))


@pytest.fixture(scope="module", params=["namespaces", "uid"])
def box(request):
    try:
        sandbox = Sandbox(LIMITS, workers=2, isolation=request.param)
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))
    with sandbox:
        yield sandbox


def test_each_status_is_reached(box):
    jobs = [
        CodeJob("def f(x):\n    return x + 1", ("assert f(1) == 2", "assert f(-1) == 0")),
        CodeJob("def f(x):\n    return x", ("assert f(1) == 2", "assert f(0) == 0")),
        CodeJob("def f(x):\n    while True: pass", ("f(1)",),
                limits=Limits(wall_s=60, cpu_s=2, memory_mb=256)),  # the CPU limit acts first
        CodeJob("def f(x) return x", ("assert f(1) == 1",)),
        CodeJob("x = 1", ("assert x == 1",), setup="raise RuntimeError('bad dataset')"),
    ]
    passed, failed, timeout, crashed, error = box.map(jobs)
    assert (passed.status, passed.tests_passed, passed.tests_total) == ("passed", 2, 2)
    assert (failed.status, failed.tests_passed, failed.detail) == (
        "failed", 1, "test 0 failed: AssertionError")
    assert (timeout.status, timeout.detail) == ("timeout", "exceeded the CPU limit of 2 s")
    assert crashed.status == "crashed" and "SyntaxError" in crashed.detail
    assert error.status == "error"
    assert error.detail == "the trusted setup failed: RuntimeError: bad dataset"


def test_values_exceptions_and_references_cross_the_boundary(box):
    program = """
import collections
class Stack:
    def __init__(self): self.items = []
    def push(self, x): self.items.append(x); return len(self.items)
def gen(n): return (i * i for i in range(n))
def fails(): raise ValueError("no")
def big(): return 3 ** 10000
def weird(): return {(1, 2): {3.5, None}, "b": b"x", "c": 1j}
print("to stdout"); import sys; print("to stderr", file=sys.stderr)
"""
    tests = (
        "s = Stack(); assert s.push(4) == 1 and s.push(5) == 2 and s.items == [4, 5]",
        "assert list(gen(4)) == [0, 1, 4, 9]",
        "try:\n    fails()\nexcept ValueError as e:\n    assert str(e) == 'no'\n"
        "else:\n    raise AssertionError",
        "assert big() == 3 ** 10000",
        "assert weird() == {(1, 2): {3.5, None}, 'b': b'x', 'c': 1j}",
        "assert repr(Stack()) == '<program Stack object>'",
    )
    result = box.run(CodeJob(program, tests))
    assert result.status == "passed", result.detail
    assert result.output == "to stdout\nto stderr\n"


def test_references_are_not_data(box):
    program = """
class AlwaysEqual:
    def __eq__(self, other): return True
    def __bool__(self): return True
def f(): return AlwaysEqual()
def g(): return lambda: 1
"""
    tests = ("assert f() == 3", "assert f()", "assert g() == g()", "assert f(lambda: 1)")
    result = box.run(CodeJob(program, tests))
    assert result.status == "failed" and result.tests_passed == 0
    assert "has no truth value" in result.detail or "AssertionError" in result.detail


def test_entry_points_and_trusted_setup(box):
    helper = "def helper(x):\n    return 2 * x\ndef solve(x):\n    'stub'\n"
    honest = CodeJob(helper + "def solve(x):\n    return helper(x) + 1\n",
                     ("assert solve(3) == helper(3) + 1",), setup=helper, entry_points=("solve",))
    # The program redefines the helper the test relies on; the test must still use the real one.
    cheat = CodeJob("def helper(x):\n    return 0\ndef solve(x):\n    return 1\n",
                    honest.tests, setup=helper, entry_points=("solve",))
    missing = CodeJob("x = 1\n", honest.tests, setup=helper, entry_points=("solve",))
    honest_r, cheat_r, missing_r = box.map([honest, cheat, missing])
    assert honest_r.status == "passed", honest_r.detail
    assert cheat_r.status == "failed"
    assert missing_r.status == "failed"
    assert "the program does not define 'solve'" in missing_r.detail


def test_an_oversized_answer_fails_its_test_only(box):
    job = CodeJob("def f():\n    return 'x' * (20 << 20)\ndef g():\n    return 1\n",
                  ("assert g() == 1", "assert len(f()) == 20 << 20", "assert g() == 1"))
    result = box.run(job)
    assert (result.status, result.tests_passed) == ("failed", 1)
    assert result.detail == ("test 1 failed: ProgramError: the program sent a broken message: "
                             "a message of 20971529 bytes exceeds the cap of 16777216 bytes")
    # ["ok","<20 MiB of x>"] is 9 bytes of JSON around the string; LIMITS.memory_mb / 16 = 16 MiB


def test_mbpp_job_counts_each_assert(box):
    job = mbpp_job("def sq(x):\n    return x * x if x < 3 else 0\n",
                   ["assert sq(1) == 1", "assert sq(2) == 4", "assert sq(3) == 9"])
    result = box.run(job)
    assert (result.status, result.tests_passed, result.tests_total) == ("failed", 2, 3)
    assert result.fraction == pytest.approx(2 / 3)


STDIO_CASES = (("3\n1 2 3\n", "6\n"), ("2\n5 5\n", "10"), ("1\n-4\n", "  -4  \n\n"))


@pytest.mark.parametrize("program, status, passed, detail", [
    ("n = int(input())\nprint(sum(map(int, input().split()[:n])))\n", "passed", 3, ""),
    ("import sys\nprint(sys.stdin.read().split()[-1])\n", "failed", 1,
     "test 0 failed: AssertionError: expected '6\\n', got '3\\n'"),
    ("raise ValueError('nope')\n", "failed", 0,
     "test 0 failed: RuntimeError: the program ended with exit status 1"),
    ("exit(0)\n", "failed", 0, "test 0 failed: AssertionError: expected '6\\n', got ''"),
    ("print('{\"test\": 0, \"ok\": true}')\nprint('PASSED')\n", "failed", 0,
     "test 0 failed: AssertionError: expected '6\\n', got '{\"test\""),
    ("def f(:\n", "crashed", 0, "the program failed to load: SyntaxError"),
])
def test_stdio_jobs_run_each_case_in_a_fresh_process(box, program, status, passed, detail):
    result = box.run(stdio_job(program, STDIO_CASES))
    assert (result.status, result.tests_passed, result.tests_total) == (status, passed, 3)
    assert result.detail.startswith(detail)


def test_stdio_cases_share_no_state_and_output_is_capped(box):
    counter = ("import builtins\nbuiltins.runs = getattr(builtins, 'runs', 0) + 1\n"
               "print(builtins.runs)\n")
    result = box.run(stdio_job(counter, [("", "1"), ("", "1"), ("", "1")]))
    assert result.status == "passed", result.detail
    flood = box.run(stdio_job("print('x' * (20 << 20))\n", [("", "x")]))
    assert flood.detail == ("test 0 failed: RuntimeError: "
                            "the program wrote more than 16777216 bytes")


def test_map_keeps_order_and_per_job_limits(box):
    jobs = [CodeJob(f"def f():\n    return {i}", (f"assert f() == {i}",)) for i in range(6)]
    slow = CodeJob("import time\ntime.sleep(5)", ("pass",), limits=Limits(wall_s=0.5))
    results = box.map([*jobs, slow])
    assert [r.status for r in results] == ["passed"] * 6 + ["timeout"]
    assert results[-1].detail == "exceeded the wall-clock limit of 0.5 s"
    assert results[-1].wall_s < 3


def test_non_root_is_refused_with_one_line(tmp_path):
    python = shutil.which("python3", path="/usr/bin")
    if os.geteuid() != 0 or python is None:
        pytest.skip("needs root and a world-readable /usr/bin/python3 to run a non-root parent")
    check = subprocess.run([python, "-c", "import sys; print(sys.version_info >= (3, 10))"],
                           capture_output=True, text=True)
    if check.stdout.strip() != "True":
        pytest.skip("/usr/bin/python3 is older than 3.10")
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from bgpo.sandbox import Sandbox, SandboxUnavailable\n"
            "try:\n    Sandbox(workers=1)\nexcept SandboxUnavailable as e:\n    print(e)\n")
    done = subprocess.run([python, "-I", "-c", code, str(REPO)], capture_output=True, text=True,
                          user=65534, group=65534, extra_groups=[], cwd="/", timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    last = done.stderr.strip().splitlines()[-1:] or [""]
    if last[0].startswith(("ModuleNotFoundError: No module named 'bgpo", "PermissionError")):
        pytest.skip(f"uid 65534 cannot import this checkout: {last[0]}")
    assert done.stdout.strip() == ("bgpo.sandbox cannot isolate programs here: "
                                   "the sandbox must run as root, not uid 65534"), done.stderr


def test_a_dead_worker_is_replaced(box):
    worker = box._workers[0]  # kill the zygote behind the first worker, as a crash would
    worker.process.kill()
    worker.process.wait()
    job = CodeJob("def f():\n    return 1", ("assert f() == 1",))
    first = worker.run(job, LIMITS)
    assert (first.status, first.detail) == (
        "error", "the sandbox worker failed: it was killed by SIGKILL")
    assert worker.run(job, LIMITS).status == "passed"
    assert all(r.passed for r in box.map([job] * 4))


def test_close_removes_cgroups_and_refuses_new_jobs():
    try:
        sandbox = Sandbox(LIMITS, workers=1)
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))
    dirs = list(sandbox._workers[0].cgroups.values())
    assert (sandbox.job_caps == "cgroup v1") == bool(dirs)
    assert all(os.path.isdir(d) for d in dirs)
    sandbox.close()
    assert not any(os.path.exists(d) for d in dirs)
    with pytest.raises(SandboxError, match="the sandbox is closed"):
        sandbox.run(CodeJob("x = 1", ("pass",)))

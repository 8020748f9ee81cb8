"""`Sandbox`: a pool of zygote workers that run code jobs in parallel and return `Result`s.

The calling process executes nothing untrusted. Each worker is a zygote process (see
`zygote`) fed one job at a time over a Unix socket; the job's program and tests travel as
two memfds so that only the runner reads the first and only the judge the second. The
facts that come back are classified here by `classify`, a pure function.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from bgpo.sandbox import cgroups, wire
from bgpo.sandbox.spec import CodeJob, Limits, Result, SandboxError, SandboxUnavailable

ISOLATIONS = ("auto", "namespaces", "uid")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from bgpo.sandbox.zygote import main; main(int(sys.argv[2]), *sys.argv[3:6])")
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
_UID_FIRST, _UID_SPAN = 1 << 30, 1 << 29  # private uids: far above any account's


def default_hidden_paths() -> tuple[str, ...]:
    """Hugging Face caches (datasets, model weights) that exist here: hidden by default, so
    a program cannot look up reference solutions in a cached copy of its own dataset."""
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join(home, ".cache"))
    candidates = [os.environ.get(name) for name in (
        "HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
        "TRANSFORMERS_CACHE")]
    candidates.append(os.path.join(xdg, "huggingface"))
    found = {os.path.realpath(p) for p in candidates if p and os.path.exists(p)}
    return tuple(sorted(found))


class Sandbox:
    """Run untrusted programs against trusted tests, `workers` at a time.

    `hidden_paths` are host files or directories that programs must not read even when
    they are world-readable (datasets with reference solutions, model weights); they are
    covered in the namespace view. None means `default_hidden_paths()`.

    >>> with Sandbox(Limits(wall_s=5), workers=2) as box:
    ...     results = box.map([CodeJob("def f(x): return x + 1", ("assert f(1) == 2",))])
    """

    def __init__(self, limits: Limits | None = None, *, workers: int = 2,
                 isolation: str = "auto", hidden_paths=None) -> None:
        if isolation not in ISOLATIONS:
            raise SandboxError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise SandboxError(f"workers must be a positive integer, got {workers!r}")
        if limits is not None and not isinstance(limits, Limits):
            raise SandboxError(f"limits must be a Limits, got {type(limits).__name__}")
        self.limits = limits or Limits()
        self._closed = False
        hidden = _check_hidden(default_hidden_paths() if hidden_paths is None else hidden_paths)
        base = _UID_FIRST + 2 * secrets.randbelow(_UID_SPAN // 2 - workers)
        self._workers: list[_Worker] = []
        try:
            for slot in range(workers):
                uids = (base + 2 * slot, base + 2 * slot + 1)
                self._workers.append(_Worker(uids, isolation, hidden))
            hellos = [worker.hello for worker in self._workers]
            self.isolation, self.fallback_reason = _choose(isolation, hellos)
        except BaseException:
            self.close()
            raise
        # What the namespace view covers (nothing in the uid fallback, which has no view).
        self.hidden_paths = tuple(hellos[0].get("hidden", ()))
        # "cgroup v1" when whole jobs are capped (memory, tasks, one CPU), else why not.
        self.job_caps = hellos[0].get("caps", "")
        # The private uids that programs and judges run under: two per worker.
        self.uids = tuple(uid for worker in self._workers for uid in worker.uids)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        for worker in self._workers:
            self._idle.put(worker)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="bgpo-sandbox")

    def run(self, job: CodeJob) -> Result:
        """Run one job on the next free worker and return its result (never raises for it)."""
        if not isinstance(job, CodeJob):
            raise SandboxError(f"Sandbox.run expects a CodeJob, got {type(job).__name__}")
        if self._closed:
            raise SandboxError("the sandbox is closed")
        worker = self._idle.get()
        try:
            return worker.run(job, job.limits or self.limits)
        finally:
            self._idle.put(worker)

    def submit(self, job: CodeJob) -> Future:
        """Queue a job; the future's result is its `Result`."""
        return self._executor.submit(self.run, job)

    def map(self, jobs) -> list[Result]:
        """Run every job, all workers in parallel; results come back in the jobs' order."""
        return [future.result() for future in [self.submit(job) for job in jobs]]

    def close(self) -> None:
        """Stop the workers and remove their cgroups; waits for running jobs to finish."""
        self._closed = True
        if hasattr(self, "_executor"):
            self._executor.shutdown(wait=True)
        for worker in self._workers:
            worker.stop()
            cgroups.remove(worker.cgroups)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_hidden(paths) -> list[str]:
    if isinstance(paths, str):
        paths = (paths,)
    for path in paths:
        if not isinstance(path, str) or not os.path.isabs(path):
            raise SandboxError(f"hidden_paths must be absolute paths, got {path!r}")
        if not os.path.exists(path):
            raise SandboxError(f"hidden path {path} does not exist")
    return sorted({os.path.realpath(p) for p in paths})


def _choose(requested: str, hellos: list[dict]) -> tuple[str, str]:
    """The isolation every worker provides, or SandboxUnavailable saying why there is none."""
    modes = {hello.get("isolation") for hello in hellos}
    reason = next((h.get("reason", "") for h in hellos if h.get("reason")), "")
    if None in modes:
        raise SandboxUnavailable(f"bgpo.sandbox cannot isolate programs here: {reason}")
    if requested == "namespaces" and modes != {"namespaces"}:
        raise SandboxUnavailable(f"isolation='namespaces' is unavailable: {reason}")
    if len(modes) != 1:
        raise SandboxUnavailable(f"the workers disagree on the isolation available: {reason}")
    return modes.pop(), reason


class _Worker:
    """One zygote process and the socket to it; used by one thread at a time."""

    def __init__(self, uids: tuple[int, int], isolation: str, hidden: list[str]) -> None:
        self.uids, self.requested, self.hidden = uids, isolation, hidden
        self.process: subprocess.Popen | None = None
        self.cgroups, self.no_cgroups = cgroups.create(f"bgpo-sandbox-{uids[0]}")
        try:
            self.hello = self._start()
        except BaseException:
            self.stop()
            cgroups.remove(self.cgroups)
            raise
        self.isolation = self.hello.get("isolation")
        self.broken = ""

    def _start(self) -> dict:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.stderr = tempfile.TemporaryFile()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-B", "-c", _BOOT, _PACKAGE_ROOT, str(theirs.fileno()),
                 self.requested, json.dumps(self.hidden), json.dumps(self.cgroups)],
                pass_fds=[theirs.fileno()], env=_ENV, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.sock = ours
        self.sock.settimeout(60)
        hello = self._receive()
        if not isinstance(hello, dict):
            raise SandboxError(f"the sandbox worker failed to start: {self._stderr_tail()}")
        if not hello.get("caps"):
            hello["caps"] = f"unavailable: {self.no_cgroups or 'the worker could not use them'}"
        return hello

    def run(self, job: CodeJob, limits: Limits) -> Result:
        if self.broken:
            return classify({"error": self.broken}, len(job.tests), limits)
        header = {"limits": asdict(limits), "uids": list(self.uids), "stdio": job.stdio}
        spec = {"tests": list(job.tests), "setup": job.setup,
                "entry_points": None if job.entry_points is None else list(job.entry_points)}
        fds = [_memfd("program", job.program.encode()), _memfd("tests", json.dumps(spec).encode())]
        try:
            self.sock.settimeout(limits.wall_s + 30)
            socket.send_fds(self.sock, [wire.pack(header)], fds)
            facts = self._receive()
        except OSError:
            facts = None
        finally:
            for fd in fds:
                os.close(fd)
        if not isinstance(facts, dict):  # the zygote died or hung: replace it
            facts = {"error": f"the sandbox worker failed: {self._stderr_tail()}"}
            self._restart()
        return classify(facts, len(job.tests), limits)

    def _receive(self) -> object:
        try:
            return wire.read_frame(self.sock.recv, 256 << 20)
        except (OSError, wire.WireError):
            return None

    def _restart(self) -> None:
        """A fresh zygote, which must provide the same isolation as the one it replaces."""
        self.stop()
        try:
            hello = self._start()
        except SandboxError as exc:
            hello = {"reason": str(exc)}
        if hello.get("isolation") != self.isolation:
            self.stop()
            self.broken = (f"the sandbox worker could not be restarted with {self.isolation} "
                           f"isolation: {hello.get('reason') or 'it now offers ' + repr(hello)}")

    def _stderr_tail(self) -> str:
        """The zygote's last words: its last line of stderr, or how it ended."""
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        if lines:
            return lines[-1]
        code = self.process.poll() if self.process else None
        if code is not None and code < 0:
            return f"it was killed by {signal.Signals(-code).name}"
        return "it stopped answering" if code is None else f"it exited with status {code}"

    def stop(self) -> None:
        if self.process is None:
            return
        self.sock.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        self.stderr.close()


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(f"bgpo-{name}", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return fd


def classify(facts: dict, n_tests: int, limits: Limits) -> Result:
    """Turn what the supervisor observed into a `Result`; the judge's records are trusted,
    anything that came from the program (output, its load error text) is only quoted."""
    verdict = facts.get("verdict", [])
    runner = (facts.get("status") or {}).get("runner") or {}
    oks = {r["test"] for r in verdict if r.get("ok") is True and isinstance(r.get("test"), int)}
    failures = [r for r in verdict if r.get("ok") is False]
    done = next((r for r in verdict if r.get("done")), None)
    load_error = next((r["load_error"] for r in verdict if "load_error" in r), None)
    setup_error = next((r["setup_error"] for r in verdict if "setup_error" in r), None)
    passed = bool(done) and oks == set(range(n_tests)) and not failures and not load_error

    def result(status: str, detail: str = "") -> Result:
        return Result(status, len(oks), n_tests, facts.get("output", ""),
                      bool(facts.get("output_truncated")), detail, float(facts.get("wall_s", 0)),
                      float(runner.get("cpu_s", 0.0)), float(runner.get("max_rss_mb", 0.0)))

    if "error" in facts:
        return result("error", facts["error"])
    if (facts.get("status") or {}).get("init_error"):
        return result("error", f"sandbox failure: {facts['status']['init_error']}")
    if setup_error:
        return result("error", f"the trusted setup failed: {setup_error}")
    if passed:
        return result("passed")
    if facts.get("timed_out"):
        return result("timeout", f"exceeded the wall-clock limit of {limits.wall_s:g} s")
    signum = runner.get("signal")
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL
                                    and runner.get("cpu_s", 0) >= limits.cpu_s):
        return result("timeout", f"exceeded the CPU limit of {limits.cpu_s} s")
    if load_error:
        return result("crashed", load_error)
    if done and done.get("program_ended"):
        return result("crashed", f"the program's process {_ending(runner)} during the tests")
    if failures:
        first = failures[0]
        return result("failed", f"test {first.get('test')} failed: {first.get('error', '')}")
    return result("error", "the test process ended without a verdict")


def _ending(runner: dict) -> str:
    if runner.get("signal"):
        try:
            return f"was killed by {signal.Signals(runner['signal']).name}"
        except ValueError:
            return f"was killed by signal {runner['signal']}"
    if runner.get("exit") is not None:
        return f"exited with status {runner['exit']}"
    return "ended"

"""The zygote: a long-lived root process that forks one confined process tree per job.

The parent (`Sandbox`) starts one zygote per worker. A zygote imports the usual standard
library once, probes which isolation the kernel allows, then for each job receives a small
JSON header (limits, uids) and two memfds (program, tests) that it never reads, and forks:

    supervisor  root; own session; enforces the wall clock; sends the facts to the parent
      init      root; pid 1 of fresh pid, mount, IPC and UTS namespaces; mounts /tmp, /proc
        judge   judge uid; reads the tests memfd; runs the tests; writes the verdict pipe
        runner  runner uid; reads the program memfd; runs the program; answers the judge

In the namespace mode the zygote itself first enters an empty network namespace and a
private mount namespace holding the read-only view of the host, which every job copies.
Killing init ends every process in its pid namespace. In the `uid` fallback (no namespaces)
every process of the job's two private uids is killed instead. The job's data never enters
the zygote's memory, so one job's tests cannot be read from a later job's runner.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time

from bgpo.sandbox import cgroups, confine, guard, judge, runner, wire

# Imported once here so that each job's processes start with them; in the `uid` fallback
# they are also the only modules a program can import if the Python installation lies in
# a directory the sandbox uids cannot enter.
PRELOAD = (
    "array", "bisect", "calendar", "cmath", "collections", "copy", "dataclasses", "datetime",
    "decimal", "encodings.idna", "enum", "fnmatch", "fractions", "functools", "glob",
    "hashlib", "heapq", "io", "itertools", "json", "math", "operator", "pathlib", "queue",
    "random", "re", "socket", "statistics", "string", "struct", "textwrap", "threading",
    "typing", "unicodedata",
)
_VERDICT_CAP, _STATUS_CAP = 4 << 20, 1 << 16
_PROBE_UID = 65534


def main(sock_fd: int, isolation: str, hidden_json: str, cgroups_json: str) -> None:
    """Serve jobs from the parent over the socket `sock_fd` until it is closed.

    `isolation` is what the parent asked for: "auto" and "namespaces" take namespaces when
    the probe succeeds, "uid" never does. `hidden_json` lists paths to cover in the view;
    `cgroups_json` maps controllers to this worker's cgroups (empty: none). The first
    message says what this zygote provides.
    """
    sock = socket.socket(fileno=sock_fd)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    dirs = json.loads(cgroups_json)
    caps = cgroups.JobCaps(dirs) if dirs else None  # opened while /sys is still writable
    hello = {**_probe(isolation, json.loads(hidden_json)), "caps": "cgroup v1" if caps else ""}
    wire.write_frame(sock.fileno(), hello)
    gc.freeze()
    while (job := _receive(sock)) is not None:
        header, fds = job
        pid = os.fork()
        if pid == 0:
            _supervisor(sock, header, fds, hello["isolation"], caps)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            reason = f"the job supervisor died ({runner.status_text(status)})"
            wire.write_frame(sock.fileno(), {"error": reason})


def _receive(sock: socket.socket) -> tuple[dict, list[int]] | None:
    data, fds, _, _ = socket.recv_fds(sock, 4, 2)
    if not data:
        return None
    rest = wire.read_frame(_prefixed(data, sock), 1 << 20)
    if not isinstance(rest, dict) or len(fds) != 2:
        raise SystemExit("bgpo sandbox zygote: malformed job from the parent")
    return rest, fds


def _prefixed(first: bytes, sock: socket.socket):
    buffered = [first]

    def read(n: int) -> bytes:
        if buffered:
            chunk = buffered.pop()
            if len(chunk) > n:
                buffered.append(chunk[n:])
            return chunk[:n]
        return sock.recv(n)

    return read


def _probe(requested: str, hidden: list[str]) -> dict:
    """Which isolation works here: 'namespaces', else 'uid', else none (with the reason)."""
    if os.geteuid() != 0:
        return {"isolation": None, "reason": f"the sandbox must run as root, not uid {os.geteuid()}"}
    if requested == "uid":
        return {"isolation": "uid", "reason": "isolation='uid' was requested", "hidden": []}
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # rehearse everything a job does, in a throwaway process
        os.close(read_end)
        try:
            _enter_worker_namespaces(hidden)
            confine.unshare(confine.JOB_NAMESPACES)
            os.waitpid(_spawn(_probe_job, [write_end]), 0)
        except BaseException as exc:  # noqa: B036
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        os._exit(0)
    os.close(write_end)
    reason = os.read(read_end, 4096).decode(errors="replace")
    os.close(read_end)
    os.waitpid(pid, 0)
    if reason != "ok":
        return {"isolation": "uid", "reason": reason or "the namespace probe died", "hidden": []}
    return {"isolation": "namespaces", "reason": "", "hidden": _enter_worker_namespaces(hidden)}


def _enter_worker_namespaces(hidden: list[str]) -> list[str]:
    confine.unshare(confine.WORKER_NAMESPACES)
    confine.make_private()
    return confine.build_static_view(hidden)


def _probe_job() -> None:
    """As a job's init: mount the scratch space, check that even root cannot write the view."""
    try:
        confine.mount_scratch(_PROBE_UID, 1)
    except BaseException as exc:  # noqa: B036
        os.write(0, f"{type(exc).__name__}: {exc}".encode())
        return
    try:
        with open("/.bgpo-sandbox-probe", "w"):
            pass
        os.write(0, b"the host filesystem stayed writable after the read-only remount")
    except OSError:
        os.write(0, b"ok")


def _supervisor(sock: socket.socket, header: dict, fds: list[int], mode: str,
                caps: cgroups.JobCaps | None) -> None:
    """Runs in a fork of the zygote; writes exactly one frame, then exits."""
    start = time.monotonic()
    try:
        os.setsid()
        if caps:
            limits = header["limits"]
            caps.set((2 * limits["memory_mb"] + 64) << 20, limits["processes"] + 8)
        facts = _supervise(header, fds, start, mode, caps)
    except BaseException as exc:  # noqa: B036
        facts = {"error": f"sandbox failure: {type(exc).__name__}: {exc}"}
    facts["wall_s"] = time.monotonic() - start
    try:
        wire.write_frame(sock.fileno(), facts)
    finally:
        os._exit(0)


def _supervise(header: dict, fds: list[int], start: float, mode: str,
               caps: cgroups.JobCaps | None) -> dict:
    limits, uids = header["limits"], header["uids"]
    if mode == "namespaces":
        confine.unshare(confine.JOB_NAMESPACES)
        confine.make_private()
        workdir = "/tmp"
    else:  # orphans come back to this process, which reaps them all at the end
        confine.prctl(confine.PR_SET_CHILD_SUBREAPER, 1)
        workdir = tempfile.mkdtemp(prefix="bgpo-sandbox-")
        os.chown(workdir, uids[0], uids[0])
    pipes = {name: os.pipe() for name in ("output", "verdict", "status")}
    try:
        init = os.fork()
        if init == 0:
            _init(header, mode, workdir, fds, {k: w for k, (_, w) in pipes.items()}, caps)
        for fd in (*fds, *(w for _, w in pipes.values())):
            os.close(fd)
        sizes = {"output": limits["output_bytes"], "verdict": _VERDICT_CAP, "status": _STATUS_CAP}
        streams = {pipes[k][0]: (k, sizes[k]) for k in pipes}
        data, truncated, timed_out = _collect(streams, pipes["status"][0],
                                              start + limits["wall_s"], init, mode, uids)
    finally:
        if mode != "namespaces":
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "output": data["output"].decode("utf-8", errors="replace"),
        "output_truncated": truncated,
        "verdict": [json.loads(line) for line in data["verdict"].splitlines() if line.strip()],
        "status": json.loads(data["status"]) if data["status"] else None,
        "timed_out": timed_out,
    }


def _collect(streams: dict, status_fd: int, deadline: float, init: int, mode: str,
             uids: list[int]) -> tuple[dict, bool, bool]:
    """Read the job's pipes until init reports or the deadline; then end the whole tree."""
    data = {name: bytearray() for name, _ in streams.values()}
    truncated = False
    poller = select.poll()
    for fd in streams:
        poller.register(fd, select.POLLIN)
    live = set(streams)
    while status_fd in live and (remaining := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(remaining * 1000):
            name, cap = streams[fd]
            chunk = os.read(fd, 1 << 16)
            room = cap - len(data[name])
            data[name] += chunk[:room]
            if not chunk or len(chunk) >= room:
                truncated |= name == "output" and len(chunk) > room
                poller.unregister(fd)
                live.discard(fd)
                os.close(fd)  # a writer past the cap now gets EPIPE instead of filling the pipe
    timed_out = status_fd in live
    _terminate(init, mode, uids)
    for fd in live:  # every writer is dead: drain what they left in the pipe buffers
        name, cap = streams[fd]
        while chunk := os.read(fd, 1 << 16):
            data[name] += chunk[: cap - len(data[name])]
        os.close(fd)
    return data, truncated, timed_out


def _terminate(init: int, mode: str, uids: list[int]) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(init, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if mode != "namespaces":
        for uid in uids:
            confine.kill_uid(uid)
    while True:  # init, and in the uid mode every orphan of the job
        try:
            os.wait()
        except ChildProcessError:
            break


def _init(header: dict, mode: str, workdir: str, fds: list[int], writers: dict,
          caps: cgroups.JobCaps | None) -> None:
    """Pid 1 of the job: mount scratch space, start judge and runner, report how they ended."""
    limits, uids, status_fd = header["limits"], header["uids"], writers["status"]
    try:
        if caps:
            caps.join()
        os.setpgid(0, 0)
        confine.prctl(confine.PR_SET_PDEATHSIG, signal.SIGKILL)
        if mode == "namespaces":
            confine.mount_scratch(uids[0], limits["disk_mb"])
        else:
            confine.prctl(confine.PR_SET_CHILD_SUBREAPER, 1)
        _oom_score(-1000)  # under memory pressure in the job's cgroup, the program goes first
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        null = os.open("/dev/null", os.O_RDWR)
        program_fd, tests_fd = fds
        judge_pid = _spawn(lambda: _judge_child(limits, uids[1]),
                           [null, null, null, tests_fd, request_w, reply_r, writers["verdict"]])
        runner_pid = _spawn(lambda: _runner_child(limits, uids[0], mode, workdir, header["stdio"]),
                            [null, writers["output"], writers["output"], program_fd, request_r,
                             reply_w])
        confine.arrange_fds([null, null, null, status_fd])
        report = _reap(judge_pid, runner_pid, uids[0])
        os.write(3, json.dumps(report).encode())
    except BaseException as exc:  # noqa: B036
        os.write(status_fd, json.dumps({"init_error": f"{type(exc).__name__}: {exc}"}).encode())
    os._exit(0)


def _spawn(body, fds: list[int]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            confine.arrange_fds(fds)
            body()
        except BaseException as exc:  # noqa: B036
            with contextlib.suppress(OSError):
                os.write(2, f"sandbox: process stopped: {type(exc).__name__}: {exc}\n".encode())
        finally:
            os._exit(70)
    return pid


def _reap(judge_pid: int, runner_pid: int, runner_uid: int) -> dict:
    """Wait for the judge; the runner is killed when the judge is done, if still running."""
    ended: dict[int, dict] = {}
    killed = False
    while judge_pid not in ended or runner_pid not in ended:
        if judge_pid in ended and runner_pid not in ended and not killed:
            killed = True  # not reaped yet, so its pid cannot have been reused
            os.kill(runner_pid, signal.SIGKILL)
        pid, status, usage = os.wait4(-1, 0)
        if pid in (judge_pid, runner_pid):
            ended[pid] = {"exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                          "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                          "cpu_s": usage.ru_utime + usage.ru_stime,
                          "max_rss_mb": usage.ru_maxrss / 1024}
        if pid == runner_pid and judge_pid not in ended:
            confine.kill_uid(runner_uid)  # its leftovers could hold the reply pipe open
    return {"runner": ended[runner_pid], "judge": ended[judge_pid]}


def _judge_child(limits: dict, uid: int) -> None:
    os.chdir("/")
    os.environ.clear()
    confine.set_limits(limits["cpu_s"], limits["memory_mb"], 1, 4, limits["open_files"])
    confine.drop_privileges(uid)
    confine.prctl(confine.PR_SET_DUMPABLE, 0)
    judge.judge(3, 4, 5, 6, _message_cap(limits))
    os._exit(0)


def _runner_child(limits: dict, uid: int, mode: str, workdir: str, stdio: bool) -> None:
    _oom_score(1000)
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=workdir, TMPDIR=workdir,
                      LANG="C.UTF-8", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    confine.set_limits(limits["cpu_s"], limits["memory_mb"], limits["file_size_mb"],
                       limits["processes"], limits["open_files"])
    confine.drop_privileges(uid)
    if mode != "namespaces":
        guard.install(workdir)
    sys.stdout.reconfigure(line_buffering=True)
    runner.serve(3, 4, 5, _message_cap(limits), stdio)


def _message_cap(limits: dict) -> int:
    """Largest message between judge and runner: small enough that decoding it stays well
    inside the judge's memory limit, so a program's huge answer fails its test instead."""
    return max(1 << 20, (limits["memory_mb"] << 20) // 16)


def _oom_score(adjustment: int) -> None:
    """Best effort: the OOM killer's preference for this process (lowering it needs
    CAP_SYS_RESOURCE, which some hosts withhold even from root)."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(adjustment))

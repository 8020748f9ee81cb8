"""Job-wide caps through cgroup v1: memory, task count and CPU share of a whole job.

Resource limits (`setrlimit`) bound each process; a program that forks can multiply them.
Where the host offers the cgroup v1 memory, pids and cpu hierarchies and lets us write to
them, each worker gets one cgroup per controller, nested under the caller's own (so the
caller's limits still apply). The parent creates and removes them; the zygote opens their
control files before it enters its mount namespace (whose /sys is read-only) and keeps the
descriptors; each job's init moves itself in, so every process of the job is counted.
A worker's jobs share its cgroups one after another and get at most one CPU between them.
cgroup v2 is not supported yet: without v1 the job-wide caps are reported as unavailable.
"""

from __future__ import annotations

import contextlib
import os

CONTROLLERS = ("memory", "pids", "cpu")


def create(name: str) -> tuple[dict[str, str], str]:
    """One cgroup per controller named `name`: ({controller: directory}, why not)."""
    mounts, own = _mount_points(), _own_paths()
    missing = [c for c in CONTROLLERS if c not in mounts or c not in own]
    if missing:
        return {}, f"no cgroup v1 hierarchy for {', '.join(missing)}"
    dirs: dict[str, str] = {}
    try:
        for controller in CONTROLLERS:
            path = os.path.join(mounts[controller], own[controller].lstrip("/"), name)
            os.mkdir(path, 0o700)
            dirs[controller] = path
        _write(dirs["memory"], "memory.swappiness", "0")
        period = _read(dirs["cpu"], "cpu.cfs_period_us")
        _write(dirs["cpu"], "cpu.cfs_quota_us", period)  # one CPU for the whole job
    except OSError as exc:
        remove(dirs)
        return {}, f"cannot set up cgroups: {exc}"
    return dirs, ""


def remove(dirs: dict[str, str]) -> None:
    """Delete the cgroups (they are empty once the worker's processes are gone)."""
    for path in dirs.values():
        with contextlib.suppress(OSError):
            os.rmdir(path)


class JobCaps:
    """Open control files of a worker's cgroups, usable after the view turns read-only."""

    def __init__(self, dirs: dict[str, str]) -> None:
        self.procs = [os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY) for d in dirs.values()]
        self.memory = os.open(os.path.join(dirs["memory"], "memory.limit_in_bytes"), os.O_WRONLY)
        self.pids = os.open(os.path.join(dirs["pids"], "pids.max"), os.O_WRONLY)

    def set(self, memory_bytes: int, tasks: int) -> None:
        """Caps for the next job (by the supervisor, before the job's init starts)."""
        os.write(self.memory, str(memory_bytes).encode())
        os.write(self.pids, str(tasks).encode())

    def join(self) -> None:
        """Move the calling process (the job's init) into the cgroups."""
        for fd in self.procs:
            os.write(fd, b"0")


def _mount_points() -> dict[str, str]:
    points = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup":
                for option in fields[sep + 3].split(","):
                    if option in CONTROLLERS:
                        points[option] = fields[4]
    return points


def _own_paths() -> dict[str, str]:
    paths = {}
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                if controller in CONTROLLERS:
                    paths[controller] = path
    return paths


def _read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name), encoding="ascii") as f:
        return f.read().strip()


def _write(directory: str, name: str, value: str) -> None:
    with open(os.path.join(directory, name), "w", encoding="ascii") as f:
        f.write(value)

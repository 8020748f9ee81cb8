"""Kernel-level confinement of one sandboxed process tree (Linux; the caller is root).

The pieces, each used by `zygote`: namespaces (`unshare` through libc, since `os.unshare`
is Python 3.12+), a private read-only view of the filesystem with fresh `/tmp`, `/dev` and
`/proc`, resource limits, dropping to an unprivileged uid with no supplementary groups and
no way to regain privileges, descriptor hygiene, and killing every process of a uid.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import signal
import stat

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
# A zygote takes a mount view and an empty network namespace once, for its lifetime; each
# job then copies the view and gets its own pid, IPC (SysV objects outlive processes) and
# UTS namespaces. Jobs of one worker run one after another and share nothing else.
WORKER_NAMESPACES = CLONE_NEWNS | CLONE_NEWNET
JOB_NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 36, 38

# Device nodes a program may need: (name, major, minor). Everything else in /dev is hidden.
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9))
_HIDDEN_DIRS = ("/var/tmp", "/run", "/var/run")  # world-writable spots, sockets to host daemons
_REPLACED = ("/proc", "/dev", "/tmp", *_HIDDEN_DIRS)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    def arg(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    ret = _libc.mount(arg(source), arg(target), arg(fstype), ctypes.c_ulong(flags), arg(data))
    _check(ret, f"mount {target}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def arrange_fds(sources: list[int]) -> None:
    """Make descriptor i a duplicate of sources[i]; close every other descriptor."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, len(sources)) for fd in sources]
    for target, fd in enumerate(high):
        os.dup2(fd, target, inheritable=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    os.closerange(len(sources), hard if 0 < hard < 1 << 20 else 1 << 20)


def set_limits(cpu_s: int, memory_mb: int, file_size_mb: int, processes: int, files: int) -> None:
    """Hard resource limits for this process and everything it starts."""
    mib = 1 << 20
    for kind, soft, hard in (
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_AS, memory_mb * mib, memory_mb * mib),
        (resource.RLIMIT_FSIZE, file_size_mb * mib, file_size_mb * mib),
        (resource.RLIMIT_NPROC, processes, processes),
        (resource.RLIMIT_NOFILE, files, files),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_MEMLOCK, 0, 0),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
    ):
        resource.setrlimit(kind, (soft, hard))


def drop_privileges(uid: int) -> None:
    """Become `uid` (also as gid) for good: no groups, no capabilities, no setuid binaries."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgroups():
        raise OSError(f"could not drop privileges to uid {uid}")


def kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` visible here, from a helper that takes on that uid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(64):  # a fork bomb may refill the table while it is being emptied
                os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except BaseException:
            code = 1
        os._exit(code)
    os.waitpid(pid, 0)


def build_static_view(hidden: list[str]) -> list[str]:
    """Make this (new, private) mount namespace a read-only view of the host.

    Runs once per worker, as root. The Python installation is exposed even under
    directories the sandbox uids could not enter (such as /root), and everything else in
    such directories is hidden; /dev holds only harmless devices; world-writable spots and
    host daemons' sockets (/var/tmp, /run) are hidden, and so is every path in `hidden`
    that is still visible. Returns the paths of `hidden` that were covered.
    """
    _expose_python()
    _remount_all_readonly()
    _mount_dev()
    covered = []
    for path in (*_HIDDEN_DIRS, *hidden):
        if os.path.lexists(path) and not os.path.islink(path):
            _cover(path)
            covered.append(path)
    return [path for path in covered if path in hidden]


def _cover(path: str) -> None:
    """An empty read-only directory over a directory; an unopenable /dev/null over a file."""
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    if os.path.isdir(path):
        mount("tmpfs", path, "tmpfs", flags, "size=4k")
    else:
        mount("/dev/null", path, None, MS_BIND)
        mount(None, path, None, MS_REMOUNT | MS_BIND | flags)


def mount_scratch(uid: int, disk_mb: int) -> None:
    """Per job, in a copy of the static view: a private /tmp for `uid` and this pid ns's /proc."""
    options = f"size={disk_mb}m,nr_inodes=8192,mode=700,uid={uid},gid={uid}"
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, options)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")


def make_private() -> None:
    """Stop mount events in this namespace from propagating back to the host."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def _remount_all_readonly() -> None:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [_unescape(line.split()[4]) for line in f]
    for point in points:
        try:
            keep = os.statvfs(point).f_flag & (MS_NODEV | MS_NOEXEC)
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | keep)
        except OSError:
            if not any(point.startswith(p + "/") for p in _REPLACED):
                raise


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def _mount_dev() -> None:
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name, major, minor in _DEVICES:
        path = f"/dev/{name}"
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(path, 0o666)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{name}")
    mount(None, "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def _expose_python() -> None:
    """Bind the interpreter's directories into empty tmpfs covers of unenterable ancestors."""
    import sys

    needed = {os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, *sys.path)
              if p and os.path.isdir(p)}
    covers: dict[str, list[str]] = {}
    for path in sorted(needed):
        blocked = _first_blocked(path)
        if blocked and blocked != path and not any(path.startswith(p + "/") for p in needed):
            covers.setdefault(blocked, []).append(path)
    for cover, paths in covers.items():
        fds = [os.open(p, os.O_PATH | os.O_CLOEXEC) for p in paths]
        mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
        old = os.umask(0o022)
        for path, fd in zip(paths, fds, strict=True):
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            os.close(fd)
        os.umask(old)


def _first_blocked(path: str) -> str | None:
    """The outermost directory on `path` that a uid owning nothing, in no group, can't enter."""
    prefix = ""
    for part in path.strip("/").split("/"):
        prefix += "/" + part
        if not os.stat(prefix).st_mode & stat.S_IXOTH:
            return prefix
    return None

"""A Python-level guard for the program when the kernel cannot give it namespaces.

In the `uid` isolation mode there is no network namespace and no private mount view, so
the runner installs this audit hook (PEP 578) before the program starts. It refuses socket
creation, starting other executables, ctypes/cffi, building code objects by hand (a route to
memory corruption), and writing anywhere but the working directory. Audit hooks cannot be
removed from Python, but a program that corrupts the interpreter's memory can get past them,
so this is a speed bump on top of the real boundary of that mode (an unprivileged uid and
resource limits), not a boundary itself. docs/sandbox.md says what that means.
"""

from __future__ import annotations

import os
import sys

_REFUSED = frozenset({"os.system", "subprocess.Popen", "os.forkpty", "code.__new__",
                      "socket.__new__", "os.chroot"})
_REFUSED_PREFIXES = ("ctypes.", "os.exec", "os.posix_spawn", "os.spawn")
_REFUSED_MODULES = frozenset({"ctypes", "_ctypes", "cffi", "_cffi_backend", "_posixsubprocess"})
# Audit events that change the filesystem, with the positions of their path arguments.
_PATH_EVENTS = {
    "os.mkdir": (0,), "os.rename": (0, 1), "os.remove": (0,), "os.rmdir": (0,),
    "os.symlink": (1,), "os.link": (1,), "os.truncate": (0,), "os.chmod": (0,),
    "os.chown": (0,), "os.utime": (0,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def install(workdir: str) -> None:
    """Add the guard to this interpreter; `workdir` is the one place writes may go."""
    root = os.path.realpath(workdir)

    def inside(path: object) -> bool:
        if isinstance(path, int):  # an already-open descriptor
            return True
        real = os.path.realpath(os.fsdecode(path))  # type: ignore[arg-type]
        return real in (root, "/dev/null") or real.startswith(root + "/")

    def hook(event: str, args: tuple) -> None:
        if event in _REFUSED or event.startswith(_REFUSED_PREFIXES):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and str(args[0]).partition(".")[0] in _REFUSED_MODULES:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open" and (args[2] or 0) & _WRITE_FLAGS and not inside(args[0]):
            raise PermissionError(f"sandbox: writing {args[0]!r} is not allowed")
        if event in _PATH_EVENTS and not all(inside(args[i]) for i in _PATH_EVENTS[event]):
            raise PermissionError(f"sandbox: {event} outside the working directory")

    sys.addaudithook(hook)

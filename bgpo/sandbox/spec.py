"""What a sandboxed run is asked to do and what it reports.

`Limits` bounds one program, `CodeJob` pairs a model-written program with trusted tests,
and `Result` is the per-program outcome that `Sandbox` returns instead of raising. The
statuses are ordered by what went wrong first: a program is `passed` only when the judge
process, which never runs model-written code, saw every test succeed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

STATUSES = ("passed", "failed", "timeout", "crashed", "error")


class SandboxError(Exception):
    """A sandbox was misconfigured or its worker processes could not be started."""


class SandboxUnavailable(SandboxError):
    """The isolation that was asked for cannot be provided on this machine."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program (and, separately, for the process running its tests)."""

    wall_s: float = 10.0
    """Wall-clock seconds for the whole job: loading the program and running every test."""
    cpu_s: int = 10
    """CPU seconds per process (RLIMIT_CPU); the program is killed when it uses them up."""
    memory_mb: int = 1024
    """Address-space cap per process in MiB (RLIMIT_AS); includes the interpreter (~50 MiB)."""
    file_size_mb: int = 16
    """Largest file the program may write, in MiB (RLIMIT_FSIZE)."""
    disk_mb: int = 64
    """Size of the program's private temporary working directory in MiB (namespace mode)."""
    processes: int = 8
    """Processes and threads the program may have at once (RLIMIT_NPROC of its private uid)."""
    open_files: int = 64
    """File descriptors per process (RLIMIT_NOFILE)."""
    output_bytes: int = 64 * 1024
    """Bytes of the program's stdout+stderr kept; the pipe is closed once this is reached."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SandboxError(f"Limits.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise SandboxError(f"Limits.{f.name} must be a positive number, got {value!r}")
            if f.name != "wall_s" and not isinstance(value, int):
                raise SandboxError(f"Limits.{f.name} must be an integer, got {value!r}")
        if self.memory_mb < 64:
            raise SandboxError(
                f"Limits.memory_mb={self.memory_mb} is too small for a Python interpreter "
                "(expected >= 64)"
            )


@dataclass(frozen=True)
class CodeJob:
    """A model-written program and the trusted tests that decide whether it is correct.

    The program runs in one process; `setup` and `tests` run in a separate judge process
    that reaches the program's top-level names through a pipe, exchanging plain data only.
    """

    program: str
    """Untrusted source code; its top-level names are what the tests can call."""
    tests: tuple[str, ...]
    """Trusted test snippets, run in order in one namespace; each passes if it raises nothing."""
    setup: str = ""
    """Trusted code the judge runs before the tests (imports, helpers the tests rely on)."""
    entry_points: tuple[str, ...] | None = None
    """Program names bound into the tests' namespace after `setup` (overriding it); None binds
    every top-level name of the program first and lets `setup` override them."""
    limits: Limits | None = None
    """Per-job limits; None uses the sandbox's."""
    stdio: bool = False
    """The program is a script reading stdin: it is not run at load; the tests get one
    function, `run_program(stdin: str) -> str`, that runs it in a fresh process each time."""

    def __post_init__(self) -> None:
        if not isinstance(self.program, str):
            raise SandboxError(f"CodeJob.program must be a str, got {type(self.program).__name__}")
        tests = (self.tests,) if isinstance(self.tests, str) else tuple(self.tests)
        if not tests or not all(isinstance(t, str) for t in tests):
            raise SandboxError("CodeJob.tests must be a non-empty sequence of source strings")
        object.__setattr__(self, "tests", tests)
        if not isinstance(self.setup, str):
            raise SandboxError(f"CodeJob.setup must be a str, got {type(self.setup).__name__}")
        if self.limits is not None and not isinstance(self.limits, Limits):
            raise SandboxError(f"CodeJob.limits must be a Limits, got {type(self.limits).__name__}")
        if not isinstance(self.stdio, bool):
            raise SandboxError(f"CodeJob.stdio must be a bool, got {self.stdio!r}")
        if self.entry_points is not None:
            names = tuple(self.entry_points)
            if not all(isinstance(n, str) and n.isidentifier() for n in names):
                raise SandboxError(f"CodeJob.entry_points must be identifiers, got {names!r}")
            object.__setattr__(self, "entry_points", names)


@dataclass(frozen=True)
class Result:
    """The outcome of one program; the sandbox reports failures here instead of raising."""

    status: str
    """One of STATUSES: passed, failed (a test failed), timeout (wall-clock or CPU limit),
    crashed (the program failed to load or its process ended), error (the sandbox or the
    trusted setup failed: not the program's fault, but it still scores 0)."""
    tests_passed: int
    tests_total: int
    output: str = ""
    """The program's stdout and stderr, merged and cut at `Limits.output_bytes`."""
    output_truncated: bool = False
    detail: str = ""
    """One line saying why the program did not pass (empty when it passed)."""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    """CPU seconds used by the program's main process."""
    max_rss_mb: float = 0.0
    """Peak resident memory of the program's main process."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise SandboxError(f"Result.status must be one of {STATUSES}, got {self.status!r}")

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def reward(self) -> float:
        """1.0 when every test passed, else 0.0."""
        return 1.0 if self.passed else 0.0

    @property
    def fraction(self) -> float:
        """Share of tests passed: a denser signal than `reward`; 0.0 unless tests ran."""
        return self.tests_passed / self.tests_total if self.tests_total else 0.0

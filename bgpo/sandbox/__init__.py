"""Sandboxed execution of model-written code for code rewards and code evaluation.

`Sandbox` runs each `CodeJob` -- an untrusted program plus trusted tests -- in its own
confined process tree and returns a `Result` (passed, failed, timeout, crashed, error)
instead of raising. Two processes share the work: the runner executes the program under an
unprivileged uid, resource limits, and (where the kernel allows, which is the default)
fresh network, pid and mount namespaces with a read-only host view; the judge runs the tests
under another uid and talks to the program only in plain data over a pipe. The verdict is
written by the judge alone, so nothing the program does to its own process can forge it.
`humaneval_job`, `mbpp_job` and `stdio_job` build jobs from the common benchmark formats.
docs/sandbox.md states what is guaranteed and what needs a container or VM.
"""

from bgpo.sandbox.jobs import humaneval_job, mbpp_job, stdio_job
from bgpo.sandbox.pool import ISOLATIONS, Sandbox, classify, default_hidden_paths
from bgpo.sandbox.spec import (
    STATUSES,
    CodeJob,
    Limits,
    Result,
    SandboxError,
    SandboxUnavailable,
)

__all__ = [
    "ISOLATIONS",
    "STATUSES",
    "CodeJob",
    "Limits",
    "Result",
    "Sandbox",
    "SandboxError",
    "SandboxUnavailable",
    "classify",
    "default_hidden_paths",
    "humaneval_job",
    "mbpp_job",
    "stdio_job",
]

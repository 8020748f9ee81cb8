"""The runner: the confined process that executes the model-written program.

It runs the program's source once, tells the judge which top-level names exist (plain data
by value, everything else by reference), then answers the judge's requests -- call this,
read that attribute, list that iterable -- one at a time. A program that reads stdin and
writes stdout is not run at load; instead the runner offers one function, `run_program`,
that runs it as `__main__` in a fresh child process on a given input and returns its output.
From the moment the program's code starts, everything in this process is under the
program's control, so nothing here is trusted: the judge treats each answer as a claim in
plain data and decides for itself.
"""

from __future__ import annotations

import builtins
import os
import signal
import sys
import traceback

from bgpo.sandbox import wire

_MESSAGE_LIMIT = 2000  # characters of an exception message sent back to the judge


def serve(program_fd: int, request_fd: int, reply_fd: int, max_bytes: int,
          stdio: bool = False) -> None:
    """Load the program from `program_fd`, then answer requests until the judge hangs up."""
    source = wire.read_fd(program_fd).decode("utf-8", errors="replace")
    namespace: dict = {"__name__": "candidate", "__builtins__": builtins}
    try:
        code = compile(source, "<program>", "exec")
        if stdio:
            namespace = {"run_program": _script(code, max_bytes)}
        else:
            exec(code, namespace)
    except BaseException as exc:  # noqa: B036 -- SystemExit, MemoryError, ...: all are failures
        _flush()
        _reply(reply_fd, ["load_error", _describe(exc)])
        os._exit(1)
    refs: list = []
    manifest = [[name, _encode(value, refs)] for name, value in list(namespace.items())
                if not name.startswith("__")]
    _flush()
    _reply(reply_fd, ["manifest", manifest])
    while True:
        request = wire.read_frame(lambda n: os.read(request_fd, n), max_bytes)
        if request is None:
            os._exit(0)
        answer = _answer(request, refs)
        _flush()
        _reply(reply_fd, answer)


def _answer(request: object, refs: list) -> list:
    try:
        op, ref, *rest = request  # type: ignore[misc]
        target = refs[ref]
        if op == "call":
            args, kwargs = (wire.decode(x, lambda h: refs[h[1]]) for x in rest)
            value = target(*args, **kwargs)
        elif op == "getattr":
            value = getattr(target, rest[0])
        elif op == "list":
            value = list(target)
        else:
            raise ValueError(f"unknown request {op!r}")
        return ["ok", _encode(value, refs)]
    except BaseException as exc:  # noqa: B036 -- the judge decides what an exception means
        return ["raise", _type_name(exc), _describe(exc, with_type=False)]


def _encode(value: object, refs: list) -> object:
    def keep(obj: object) -> list:
        refs.append(obj)
        return ["H", len(refs) - 1, _type_name(obj)]

    try:
        return wire.encode(value, keep)
    except Exception:  # e.g. a list that contains itself, or a dict whose items() raises
        return keep(value)


def _type_name(obj: object) -> str:
    try:
        return str(type(obj).__name__)
    except BaseException:  # noqa: B036
        return "object"


def _describe(exc: BaseException, with_type: bool = True) -> str:
    try:
        text = str(exc)
    except BaseException:  # noqa: B036
        text = "<unprintable>"
    text = f"{_type_name(exc)}: {text}" if with_type else text
    return text[:_MESSAGE_LIMIT]


def _reply(fd: int, message: list) -> None:
    try:
        wire.write_frame(fd, message)
    except OSError:  # the judge is gone: nothing left to do
        os._exit(0)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: B036 -- the program may have replaced or closed them
            pass


def _script(code, max_bytes: int):
    def run_program(stdin: str) -> str:
        """Run the program as __main__ in a fresh process reading `stdin`; its stdout."""
        _flush()
        source = os.memfd_create("stdin")
        os.write(source, stdin.encode())
        os.lseek(source, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(source, 0)
            os.dup2(out_w, 1)
            os.closerange(3, 1 << 16)  # the script gets its standard streams and nothing else
            _run_main(code)
        os.close(source)
        os.close(out_w)
        output, complete = _read_capped(out_r, max_bytes)
        if not complete:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if not complete:
            raise RuntimeError(f"the program wrote more than {max_bytes} bytes")
        if status != 0:
            raise RuntimeError(f"the program ended with {status_text(status)}")
        return output.decode("utf-8", errors="replace")

    return run_program


def _run_main(code) -> None:
    """In the child: run the script with fresh standard streams; never returns."""
    exit_code = 1
    try:
        sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        exec(code, {"__name__": "__main__", "__builtins__": builtins})
        exit_code = 0
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: B036
        traceback.print_exc()
    finally:
        _flush()
        os._exit(exit_code & 0xFF)


def _read_capped(fd: int, max_bytes: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            os.close(fd)
            return b"", False
    os.close(fd)
    return b"".join(chunks), True


def status_text(status: int) -> str:
    """A wait status in words: 'exit status 1', 'signal SIGKILL'."""
    if os.WIFSIGNALED(status):
        try:
            return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"

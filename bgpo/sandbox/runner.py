"""The runner: the confined process that executes the model-written program.

It runs the program's source once, tells the judge which top-level names exist (plain data
by value, everything else by reference), then answers the judge's requests -- call this,
read that attribute, list that iterable -- one at a time. From the moment the program's
code starts, everything in this process is under the program's control, so nothing here
is trusted: the judge treats each answer as a claim in plain data and decides for itself.
"""

from __future__ import annotations

import builtins
import os
import sys

from bgpo.sandbox import wire

_MESSAGE_LIMIT = 2000  # characters of an exception message sent back to the judge


def serve(program_fd: int, request_fd: int, reply_fd: int, max_bytes: int) -> None:
    """Load the program from `program_fd`, then answer requests until the judge hangs up."""
    source = wire.read_fd(program_fd).decode("utf-8", errors="replace")
    namespace: dict = {"__name__": "candidate", "__builtins__": builtins}
    try:
        exec(compile(source, "<program>", "exec"), namespace)
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


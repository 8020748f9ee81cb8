"""The judge: the confined process that runs the trusted tests and writes the verdict.

It never executes model-written code. The program's top-level names appear in the tests'
namespace as `ProgramObject` references; calling one sends the arguments to the runner as
plain data and turns the reply back into plain builtin values (or another reference). A
test passes when its code raises nothing, and only the judge writes the verdict, through a
pipe the runner never holds. Whatever the program does to its own interpreter -- exiting
early, printing fake results, patching builtins, deleting functions -- changes at most the
plain data it answers with, and a wrong answer fails the test it was checked against.
"""

from __future__ import annotations

import builtins
import json
import os

from bgpo.sandbox import wire

_ERROR_CHARS = 500


class ProgramError(Exception):
    """The program could not give an answer: it ended, sent malformed data, or raised an
    exception that is not a builtin Exception subclass (SystemExit, say, or its own class)."""


class ProgramObject:
    """A reference to an object that lives in the program's process.

    Calling it, reading a public attribute or iterating it asks the program; every other
    operation is the plain-Python default (identity equality, no truth value), so a
    reference can never pass for data it is compared with.
    """

    __slots__ = ("_channel", "_ref", "_label")

    def __init__(self, channel: Channel, ref: int, label: str) -> None:
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_label", label)

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._channel.request("call", self._ref, _encode(list(args)), _encode(kwargs))

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._channel.request("getattr", self._ref, name)

    def __iter__(self):
        return iter(self._channel.request("list", self._ref))

    def __bool__(self) -> bool:
        raise TypeError(f"{self!r} has no truth value: it is not plain data")

    def __repr__(self) -> str:
        return f"<program {self._label} object>"


def _encode(value: object) -> object:
    def reference(obj: object) -> list:
        if isinstance(obj, ProgramObject):
            return ["H", obj._ref]
        raise TypeError(f"a {type(obj).__name__} cannot be passed to the program: "
                        "only plain data and the program's own objects cross the boundary")

    return wire.encode(value, reference)


class Channel:
    """The judge's end of the request/reply pipes to the runner.

    Once a reply is cut short or malformed the stream cannot be trusted to be in step, so
    every later request fails with the same reason; `ended` tells an ended program apart.
    """

    def __init__(self, request_fd: int, reply_fd: int, max_bytes: int) -> None:
        self.request_fd, self.reply_fd, self.max_bytes = request_fd, reply_fd, max_bytes
        self.lost = ""
        self.ended = False

    def _lose(self, reason: str, ended: bool) -> ProgramError:
        self.lost, self.ended = reason, ended
        return ProgramError(reason)

    def receive(self) -> object:
        try:
            message = wire.read_frame(lambda n: os.read(self.reply_fd, n), self.max_bytes)
        except wire.WireError as exc:
            raise self._lose(f"the program sent a broken message: {exc}", False) from None
        except OSError:
            message = None
        if message is None:
            raise self._lose("the program's process has ended", True)
        return message

    def request(self, *message: object) -> object:
        if self.lost:
            raise ProgramError(self.lost)
        try:
            wire.write_frame(self.request_fd, list(message))
        except OSError:
            raise self._lose("the program's process has ended", True) from None
        reply = self.receive()
        if isinstance(reply, list) and len(reply) == 2 and reply[0] == "ok":
            return self.decode(reply[1])
        if (isinstance(reply, list) and len(reply) == 3 and reply[0] == "raise"
                and all(isinstance(x, str) for x in reply[1:])):
            raise _exception(reply[1], reply[2])
        raise ProgramError("the program sent a malformed reply")

    def decode(self, data: object) -> object:
        try:
            return wire.decode(data, self._reference)
        except wire.WireError as exc:
            raise ProgramError(f"the program sent malformed data: {exc}") from None

    def _reference(self, data: list) -> ProgramObject:
        if len(data) == 3 and type(data[1]) is int and isinstance(data[2], str):
            return ProgramObject(self, data[1], data[2][:100])
        raise wire.WireError("malformed reference")


def _exception(name: str, message: str) -> Exception:
    """The builtin exception the program says it raised, or ProgramError for anything else."""
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except Exception:  # constructors such as UnicodeDecodeError's need more arguments
            pass
    return ProgramError(f"{name}: {message}"[:_ERROR_CHARS])


def judge(tests_fd: int, request_fd: int, reply_fd: int, verdict_fd: int, max_bytes: int) -> None:
    """Run the tests of the job in `tests_fd` against the runner; write verdict lines."""

    def report(record: dict) -> None:
        os.write(verdict_fd, (json.dumps(record) + "\n").encode())

    spec = json.loads(wire.read_fd(tests_fd))
    channel = Channel(request_fd, reply_fd, max_bytes)
    names = _load(channel)
    if isinstance(names, str):
        report({"load_error": names[:_ERROR_CHARS]})
        report({"done": True})
        return
    try:
        namespace = _namespace(spec, names)
    except BaseException as exc:  # noqa: B036 -- a broken trusted setup is the dataset's fault
        report({"setup_error": _describe(exc)})
        report({"done": True})
        return
    for index, test in enumerate(spec["tests"]):
        try:
            exec(compile(test, f"<test {index}>", "exec"), namespace)
            report({"test": index, "ok": True})
        except BaseException as exc:  # noqa: B036 -- any exception, SystemExit included, fails
            report({"test": index, "ok": False, "error": _describe(exc)})
    report({"done": True, "program_ended": channel.ended})


def _load(channel: Channel) -> dict | str:
    """The program's top-level names, or why the program did not get that far."""
    try:
        first = channel.receive()
    except ProgramError as exc:
        return f"the program did not finish loading: {exc}"
    if isinstance(first, list) and len(first) == 2 and first[0] == "load_error":
        return f"the program failed to load: {first[1]}"
    if not (isinstance(first, list) and len(first) == 2 and first[0] == "manifest"
            and isinstance(first[1], list)):
        return "the program sent a malformed list of names"
    names = {}
    try:
        for name, data in first[1]:
            if isinstance(name, str):
                names[name] = channel.decode(data)
    except (ProgramError, TypeError, ValueError):
        return "the program sent a malformed list of names"
    return names


def _namespace(spec: dict, names: dict) -> dict:
    namespace: dict = {"__name__": "__tests__", "__builtins__": builtins}
    entry_points = spec["entry_points"]
    if entry_points is None:
        namespace.update(names)
    exec(compile(spec["setup"], "<setup>", "exec"), namespace)
    for name in entry_points or ():
        namespace[name] = names[name] if name in names else _missing(name)
    return namespace


def _missing(name: str):
    def missing(*args: object, **kwargs: object) -> object:
        raise ProgramError(f"the program does not define {name!r}")

    return missing


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:_ERROR_CHARS]

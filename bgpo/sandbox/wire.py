"""Framing and the plain-data codec spoken between the sandbox's processes.

Every message is a 4-byte big-endian length followed by that many bytes of JSON. Values
that cross between the judge (which runs the trusted tests) and the runner (which runs the
model-written program) use a tagged JSON encoding, so that decoding can only ever build
builtin plain data -- None, bool, int, float, complex, str, bytes, bytearray, list, tuple,
set, frozenset, dict -- or an opaque reference to an object that stays in the runner.
Decoding never imports, calls or unpickles anything the sender chose: this is what lets
the judge read the program's answers without running the program's code.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable

_HEADER = struct.Struct(">I")
_BIG_INT_BITS = 4096  # str(int) is capped near 4300 digits; beyond this bound ints go as hex
_SEQUENCES = {"L": list, "T": tuple, "S": set, "F": frozenset}


class WireError(Exception):
    """A message was malformed, too large, or cut short."""


def pack(message: object) -> bytes:
    """One frame: the length header and the JSON body of `message`."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, message: object) -> None:
    """Write one frame to a pipe or socket file descriptor."""
    view = memoryview(pack(message))
    while view:
        view = view[os.write(fd, view) :]


def read_frame(read: Callable[[int], bytes], max_bytes: int) -> object | None:
    """Read one frame with `read(n)` (os.read or socket.recv); None at a clean end of stream."""
    header = _read_exact(read, _HEADER.size, allow_eof=True)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > max_bytes:
        raise WireError(f"a message of {size} bytes exceeds the cap of {max_bytes} bytes")
    body = _read_exact(read, size, allow_eof=False)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"a message is not valid JSON: {exc}") from None


def read_fd(fd: int) -> bytes:
    """Everything in a file descriptor from its start (a memfd sent by the parent); closes it."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _read_exact(read: Callable[[int], bytes], size: int, allow_eof: bool) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        chunk = read(min(size - got, 1 << 20))
        if not chunk:
            if allow_eof and got == 0:
                return None
            raise WireError(f"the stream ended {got} bytes into a {size}-byte read")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def encode(value: object, other: Callable[[object], object]) -> object:
    """Tagged JSON for plain data; `other(value)` encodes anything else (or raises TypeError).

    Subclasses of the builtin types are encoded as their base type, so a namedtuple
    arrives as a tuple and a Counter as a dict: the receiver never sees custom methods.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        number = int(value)
        return number if number.bit_length() <= _BIG_INT_BITS else ["I", hex(number)]
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, complex):
        return ["C", float(value.real), float(value.imag)]
    if isinstance(value, (bytes, bytearray)):
        return ["A" if isinstance(value, bytearray) else "B", bytes(value).hex()]
    if isinstance(value, dict):
        return ["D", [[encode(k, other), encode(v, other)] for k, v in value.items()]]
    for tag, kind in _SEQUENCES.items():
        if isinstance(value, kind):
            return [tag, [encode(item, other) for item in value]]
    return other(value)


def decode(data: object, handle: Callable[[list], object]) -> object:
    """Rebuild a value from `encode`'s output; `handle(["H", ...])` rebuilds references.

    Raises WireError for anything that is not well-formed tagged data.
    """
    try:
        return _decode(data, handle)
    except WireError:
        raise
    except (TypeError, ValueError, RecursionError, MemoryError) as exc:
        raise WireError(f"malformed value: {type(exc).__name__}: {exc}") from None


def _decode(data: object, handle: Callable[[list], object]) -> object:
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise WireError(f"malformed value of type {type(data).__name__}")
    tag, args = data[0], data[1:]
    if tag == "H":
        return handle(data)
    if tag in _SEQUENCES and len(args) == 1 and isinstance(args[0], list):
        return _SEQUENCES[tag](_decode(item, handle) for item in args[0])
    if tag == "D" and len(args) == 1 and isinstance(args[0], list):
        return {_decode(k, handle): _decode(v, handle) for k, v in map(_pair, args[0])}
    if tag == "I" and len(args) == 1 and isinstance(args[0], str):
        return int(args[0], 16)
    if tag == "C" and len(args) == 2 and all(isinstance(a, (int, float)) for a in args):
        return complex(float(args[0]), float(args[1]))
    if tag in ("B", "A") and len(args) == 1 and isinstance(args[0], str):
        raw = bytes.fromhex(args[0])
        return raw if tag == "B" else bytearray(raw)
    raise WireError(f"malformed value with tag {tag!r}")


def _pair(item: object) -> list:
    if not isinstance(item, list) or len(item) != 2:
        raise WireError("a dict entry is not a [key, value] pair")
    return item

"""Payloads: a file's format from its first bytes, the pickle of a torch zip file, and the
one walk over a pickle's opcodes, executing nothing.

A payload is a `torch.save` file (zip, or the legacy format) or a bare pickle. The
pickle of a zip file is its one `<name>/data.pkl` record (`pickle_record`); tensors live
in other records. `scan_pickle` reads a pickle's opcodes once and reports how deep its
values nest, the globals it names and the strings it pushes: what the unpickler's
nesting limit, the manifest's `unsafe_globals` and detection's `_metadata` test need.

>>> payload_format(b"PK\\x03\\x04...")
'zip'
>>> payload_format(b"\\x80\\x02}q\\x00.")
'pickle'
>>> scan = scan_pickle(b"\\x80\\x02cbuiltins\\nprint\\nq\\x00.")
>>> sorted(scan.globals), scan.depth, scan.complete
(['builtins.print'], 1, True)
"""

from __future__ import annotations

import _compat_pickle
import functools
import io
import pickle
import pickletools
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from .listing import read_whole

PayloadFormat = Literal["zip", "legacy", "pickle", "unknown"]

ZIP_MAGIC = b"PK\x03\x04"
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
"""Pickle protocol 2, then `LONG1` of torch's magic number 0x1950a86a20f9469cfc6c."""
HEAD_SIZE = tarfile.BLOCKSIZE
MAX_PICKLE_BYTES = 256 << 20
"""A `data.pkl` record larger than this is refused before it is read (tensors live outside)."""
PICKLE_RECORD = "data.pkl"
_STRING_OPCODES = frozenset(
    {
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
    }
)
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MODIFIERS = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})


def payload_format(head: bytes | bytearray) -> PayloadFormat:
    """The format of a payload from its first `HEAD_SIZE` bytes.

    `zip` and `legacy` are the two `torch.save` formats; `pickle` is a bare pickle
    (flambe's pickle-only archives, and 0.4.0-0.4.4 stashes).
    """
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(LEGACY_TORCH_MAGIC):
        return "unknown" if _is_tar_header(head) else "legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def _is_tar_header(block: bytes | bytearray) -> bool:
    """A tar header that also starts like a legacy torch file: torch would unpack it as
    its pre-1.0 tar format, reading members through links, so we refuse it."""
    try:
        tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.TarError:
        return False
    return True


def file_payload_format(path: Path) -> PayloadFormat:
    """`payload_format` of a file on disk."""
    with path.open("rb") as file:
        return payload_format(file.read(HEAD_SIZE))


SMALL_PAYLOAD_BYTES = 1 << 20
"""Payloads up to this size are read whole, once, and decoded from memory."""


@dataclass(frozen=True)
class PayloadFile:
    """A payload file, sniffed; read whole (`data`) when small and about to be decoded, one
    at a time (so that a load holds at most one payload's bytes beside the tensors).

    `data` is a `bytearray`: the tensors decoded from it share its memory.
    """

    path: Path
    size: int
    format: PayloadFormat
    data: bytearray | None = None

    def open(self) -> IO[bytes]:
        """The payload's bytes from their start: from memory when read whole."""
        return io.BytesIO(self.data) if self.data is not None else self.path.open("rb")


def read_payload_file(path: Path, size: int, whole: bool = False) -> PayloadFile:
    """Sniff the payload at `path` (of `size` bytes); with `whole`, read it whole if it is
    small (for a load: peeking and decoding then share the bytes).

    An unreadable file is sniffed as `unknown`: whoever decodes it reports why.
    """
    try:
        if whole and size <= SMALL_PAYLOAD_BYTES:
            data = read_whole(path, size, sys.maxsize)
            return PayloadFile(path, len(data), payload_format(data[:HEAD_SIZE]), data)
        with path.open("rb") as file:
            return PayloadFile(path, size, payload_format(file.read(HEAD_SIZE)))
    except OSError:
        return PayloadFile(path, size, "unknown")


def refuse_inflating_record(name: str, inflated: int, size: int) -> None:
    """Refuse a zip record that inflates to more than its whole `size`-byte file: only a
    compressed record can, and torch inflates a record whole into memory (a zip bomb)."""
    if inflated > size:
        raise pickle.UnpicklingError(
            f"zip record {name!r} inflates to {inflated} bytes, more than the whole "
            f"{size}-byte file (a zip bomb?)"
        )


def pickle_record(archive: zipfile.ZipFile) -> bytes:
    """The pickle of a torch zip file: its one `<name>/data.pkl` record, at most
    `MAX_PICKLE_BYTES`; `pickle.UnpicklingError` otherwise."""
    infos = archive.infolist()
    name = pickle_record_name([(info.filename, info.file_size) for info in infos])
    return archive.read(next(info for info in infos if info.filename == name))


def pickle_record_name(records: Iterable[tuple[str, int]]) -> str:
    """The name of the one `<name>/data.pkl` record among a zip file's records (names and
    inflated sizes), if it has at most `MAX_PICKLE_BYTES`; `pickle.UnpicklingError` otherwise
    (two records of that name included)."""
    found = [
        (name, size)
        for name, size in records
        if name.count("/") == 1 and name.endswith("/" + PICKLE_RECORD)
    ]
    if len(found) != 1:
        raise pickle.UnpicklingError(f"the zip file has no single {PICKLE_RECORD} record")
    name, size = found[0]
    if size > MAX_PICKLE_BYTES:
        raise pickle.UnpicklingError(f"{PICKLE_RECORD} is larger than {MAX_PICKLE_BYTES} bytes")
    return name


@functools.lru_cache(maxsize=1024)
def python3_name(module: str, name: str) -> str:
    """`module.name` as Python 3 spells it (protocol 2 pickles may say `__builtin__.set`)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


@dataclass
class PickleScan:
    """What one walk over a pickle's opcodes found."""

    depth: int = 0
    """How deep the values it builds nest (a value modified in place counts as its parts)."""
    globals: set[str] = field(default_factory=set)
    """Every global it names, as `module.name` (`?` when a name cannot be traced)."""
    strings: set[str] = field(default_factory=set)
    """Every string it pushes."""
    complete: bool = False
    """The walk reached STOP: the opcodes are well formed."""


@dataclass
class _Value:
    """A stack or memo entry: how deep it nests, and its text if it is a string."""

    depth: int
    text: str | None = None


def scan_pickle(data: bytes | IO[bytes], max_depth: int | None = None) -> PickleScan:
    """Walk a pickle's opcodes once (from a file's current position to STOP), unpickling
    nothing. The walk stops early at malformed opcodes (`complete` stays false: the
    unpickler says how they are malformed), or once values nest deeper than `max_depth`.

    GLOBAL and INST carry their name; STACK_GLOBAL takes it from the two strings on the
    stack, pushed directly or fetched from the memo. Python 2 names are mapped as the
    unpickler maps them (`__builtin__.set` is `builtins.set`).

    >>> import pickle
    >>> scan = scan_pickle(pickle.dumps([[{1, 2}]], protocol=2))
    >>> sorted(scan.globals), scan.depth  # set(tuple(list)): 3 levels inside 2 lists, STOP
    (['builtins.set'], 6)
    """
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    scan = PickleScan()
    stack: list[_Value] = []
    marks: list[int] = []
    memo: dict[object, _Value] = {}
    try:
        for opcode, argument, _ in pickletools.genops(file):
            name = opcode.name
            if name == "MARK":
                marks.append(len(stack))
            elif name in _MEMO_PUT or name == "MEMOIZE":
                memo[len(memo) if name == "MEMOIZE" else argument] = stack[-1]
            elif name in _MEMO_GET:
                stack.append(memo[argument])
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in _STRING_OPCODES:
                text = argument if isinstance(argument, str) else str(argument)
                scan.strings.add(text)
                stack.append(_Value(0, text))
            else:
                _name_global(opcode, argument, stack, scan)
                depth = _apply(opcode, stack, marks)
                scan.depth = max(scan.depth, depth)
                if max_depth is not None and depth > max_depth:
                    return scan
            if name == "STOP":
                scan.complete = True
    except (ValueError, IndexError, KeyError):
        pass  # malformed: the unpickler says how
    return scan


def _name_global(
    opcode: pickletools.OpcodeInfo, argument: object, stack: list[_Value], scan: PickleScan
) -> None:
    name = opcode.name
    if name in ("GLOBAL", "INST"):
        module, _, qualname = str(argument).partition(" ")
        scan.globals.add(python3_name(module, qualname))
    elif name == "STACK_GLOBAL":
        pair = [value.text for value in stack[-2:]]
        if len(pair) == 2 and pair[0] is not None and pair[1] is not None:
            scan.globals.add(python3_name(pair[0], pair[1]))
        else:
            scan.globals.add("?")
    elif name in ("EXT1", "EXT2", "EXT4"):
        scan.globals.add(f"?.extension{argument}")  # the copyreg registry of the loader


def _apply(opcode: pickletools.OpcodeInfo, stack: list[_Value], marks: list[int]) -> int:
    """Take what `opcode` consumes, push what it leaves; returns the depth it built."""
    taken: list[_Value] = []
    below = len(opcode.stack_before)
    if pickletools.markobject in opcode.stack_before:
        at = marks.pop()
        taken, stack[at:] = stack[at:], []
        below = opcode.stack_before.index(pickletools.markobject)
    if below:
        if len(stack) < below:
            raise IndexError("stack underflow")
        taken, stack[-below:] = stack[-below:] + taken, []
    if opcode.name in _MODIFIERS:
        target = taken[0]
        target.depth = max(target.depth, 1 + max((v.depth for v in taken[1:]), default=-1))
        stack.append(target)
        return target.depth
    depth = 1 + max((value.depth for value in taken), default=-1)
    stack.extend(_Value(depth) for _ in opcode.stack_after)
    return depth

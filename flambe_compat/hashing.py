"""Files hashed while they are written: the sha256 comes from the bytes in memory.

A protocol 2 save lists every file's size and sha256 in its manifest. Reading the files
back to hash them would cost a second pass over every byte; instead `HashedFile` hashes
what goes through it. A large chunk (a tensor's bytes, handed over by `torch.save` in
one piece) is hashed on another thread while this one writes it: sha256 and the write
system call both release the GIL, so the hash costs no time when a core is free.

>>> import hashlib, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "f"
>>> with HashedFile(path) as file:
...     _ = file.write(b"abc")
>>> file.size, file.sha256 == hashlib.sha256(b"abc").hexdigest()
(3, True)
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from types import TracebackType
from typing import Any, NamedTuple

_NEW_FILE = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)
"""Unbuffered (`HashedFile` gathers small writes itself), refusing to replace a file."""
PARALLEL_BYTES = 1 << 20
"""Chunks at least this large are hashed on the helper thread, smaller ones inline: a
thread hand-off costs more than hashing a zip header."""


class HashedFile:
    """A new binary file (refusing to replace one) that hashes what is written to it;
    given a function instead of a path, the bytes go to it (a tar member's writer).

    With `hasher`, chunks of `PARALLEL_BYTES` or more are hashed there while they are
    written; `write` returns once both are done, so the caller may reuse its buffer, and
    `write_kept` at once, for a caller whose buffer stays unchanged until `sha256` is
    read (the writer goes on to its next chunk, or file, meanwhile). The updates handed
    to `hasher` run one after the other, in the order of the bytes. Small chunks are
    hashed inline: handing a 100 KB file's hash to a thread made many-node saves slower.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | Callable[[memoryview], object],
        hasher: Executor | None = None,
    ) -> None:
        self._descriptor: int | None = None
        self._write: Callable[[memoryview], object]
        if callable(target):
            self._write = target
        else:
            self._descriptor = descriptor = os.open(target, _NEW_FILE, 0o666)
            self._write = functools.partial(_write_all, descriptor)
        self._digest = hashlib.sha256()
        self._hasher = hasher
        self._pending = bytearray()
        """Small chunks (zip headers...) gathered for one write and one hash update."""
        self._last: Future[None] | None = None
        """The last hash update handed to `hasher`; the next one waits for it."""
        self.size = 0

    def write(self, data: Any) -> int:
        count = self.write_kept(data)
        self._wait()
        return count

    def write_kept(self, data: Any) -> int:
        """`write`, but a large chunk may still be being hashed when this returns: `data`
        must not change until `sha256` is read (the hash update holds a reference)."""
        view = memoryview(data).cast("B")
        if view.nbytes < PARALLEL_BYTES:
            self._pending += view
        else:
            self.flush()
            if self._hasher is None:
                self._digest.update(view)
            else:
                self._hash_later(view)
            self._write(view)
        self.size += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, bytearray()
        if self._last is not None:
            self._hash_later(pending)
        else:
            self._digest.update(pending)
        self._write(memoryview(pending))

    def _hash_later(self, view: memoryview | bytearray) -> None:
        assert self._hasher is not None
        previous, digest = self._last, self._digest

        def update() -> None:
            if previous is not None:
                previous.result()
            digest.update(view)

        self._last = self._hasher.submit(update)

    def _wait(self) -> None:
        if self._last is not None:
            self._last.result()
            self._last = None

    @property
    def sha256(self) -> str:
        self.flush()
        self._wait()
        return self._digest.hexdigest()

    def __enter__(self) -> HashedFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                self.flush()
        finally:
            if self._descriptor is not None:
                os.close(self._descriptor)


class WrittenFile(NamedTuple):
    """The size and sha256 of a file written whole (`write_hashed`), as `HashedFile` has."""

    size: int
    sha256: str


def write_hashed(path: str | os.PathLike[str], data: bytes) -> WrittenFile:
    """Write `data` to the new file `path` in one go (refusing to replace a file); returns
    its size and sha256. A save writes thousands of small text files this way."""
    descriptor = os.open(path, _NEW_FILE, 0o666)
    try:
        _write_all(descriptor, memoryview(data))
    finally:
        os.close(descriptor)
    return digest_of(data)


def digest_of(data: bytes) -> WrittenFile:
    """The size and sha256 of `data`."""
    return WrittenFile(len(data), hashlib.sha256(data).hexdigest())


def _write_all(descriptor: int, view: memoryview) -> None:
    while view:
        view = view[os.write(descriptor, view) :]

"""Where a save's files go: a local folder, or a tarball streamed into a tar.gz.

The writers of `flambe_compat.write` name each file by its POSIX path below the
archive's root and hand over its bytes; a destination puts them there. `Folder` writes
files below a local folder. `Tarball` streams each one into a tar member as it is made,
so a compressed save needs no copy of the folder on disk: a file whose size is known
before its bytes (text, and the torch files of protocol 2, see
`flambe_compat.torchzip.plan_zip`) goes straight in; one whose size is not (a
`torch.save` of protocol 1, a ZIP64 payload, a pickle-only archive) is written to a
temporary file in the scratch folder first, then copied in and deleted.

>>> import tarfile, tempfile, pathlib
>>> from flambe_compat.compress import tar_gz_writer
>>> work = pathlib.Path(tempfile.mkdtemp())
>>> with tar_gz_writer(work / "m.tar.gz") as tar:
...     files = Tarball(tar, "m", work)
...     files.folder("")
...     files.whole("version.txt", b"Model:1.0.0").size
11
>>> tarfile.open(work / "m.tar.gz").getnames()
['m', 'm/version.txt']
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import IO, Protocol

from .compress import TarWriter
from .hashing import HashedFile, WrittenFile, digest_of, write_hashed

_COPY_BYTES = 1 << 20


class Destination(Protocol):
    """Where the files of one save go, each named by its POSIX path below the root."""

    sizes_first: bool
    """Whether a file's size is wanted before its bytes (to stream it, not spill it)."""

    def folder(self, prefix: str) -> None:
        """The folder `prefix` (`""`: the root; else ending in `/`), parents first."""

    def whole(self, name: str, data: bytes) -> WrittenFile:
        """A file holding `data`; returns its size and sha256."""

    def hashed(
        self, name: str, size: int | None, hasher: Executor | None
    ) -> contextlib.AbstractContextManager[HashedFile]:
        """A file of `size` bytes (None: not known yet) written in the block and hashed
        as it is written (see `HashedFile`)."""

    def plain(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A binary file written in the block, not hashed."""


class Folder:
    """Files below the local folder `root` (created by `folder("")`)."""

    sizes_first = False

    def __init__(self, root: Path) -> None:
        self._root = f"{os.fspath(root)}/"  # strings: thousands of Paths cost a few percent

    def folder(self, prefix: str) -> None:
        with contextlib.suppress(FileExistsError):  # the root may be there already
            os.mkdir(self._root + prefix)

    def whole(self, name: str, data: bytes) -> WrittenFile:
        return write_hashed(self._root + name, data)

    def hashed(self, name: str, size: int | None, hasher: Executor | None) -> HashedFile:
        return HashedFile(self._root + name, hasher)

    def plain(self, name: str) -> IO[bytes]:
        return open(self._root + name, "xb")


class Tarball:
    """Files streamed into `tar` as members below `root` (`""`: at the top), spilling a
    file of unknown size to a temporary file in `scratch` first."""

    sizes_first = True

    def __init__(self, tar: TarWriter, root: str, scratch: Path) -> None:
        self._tar = tar
        self._root = f"{root}/" if root else ""
        self._scratch = scratch

    def folder(self, prefix: str) -> None:
        self._tar.folder((self._root + prefix).rstrip("/"))

    def whole(self, name: str, data: bytes) -> WrittenFile:
        self._tar.file(self._root + name, data)
        return digest_of(data)

    @contextlib.contextmanager
    def hashed(self, name: str, size: int | None, hasher: Executor | None) -> Iterator[HashedFile]:
        if size is None:
            with self.plain(name) as spill, HashedFile(spill.write, hasher) as file:
                yield file
            return
        with self._tar.member(self._root + name, size) as write, HashedFile(write, hasher) as file:
            yield file

    @contextlib.contextmanager
    def plain(self, name: str) -> Iterator[IO[bytes]]:
        with tempfile.TemporaryFile(dir=self._scratch) as spill:
            yield spill
            size = spill.tell()
            spill.seek(0)
            with self._tar.member(self._root + name, size) as write:
                while chunk := spill.read(_COPY_BYTES):
                    write(chunk)

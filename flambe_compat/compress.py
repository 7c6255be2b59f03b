"""Gzip streams of tar.gz archives: standard gzip that every flambe reads, on every core.

flambe 0.4.x reads a tar.gz with `tarfile.open(path, "r:gz")`: any standard gzip file
(RFC 1952) will do, and a file of several gzip members one after another is one. We
write a tarball as members of `MEMBER_BYTES` uncompressed bytes, each deflated on its
own by a pool of threads (ISA-L's deflate at `ISAL_LEVEL` when python-isal is installed,
zlib at `ZLIB_LEVEL` otherwise; both release the GIL). Each member's header carries a
standard extra subfield, `FC`, giving the member's length in the file and its size
unpacked, which other readers skip. With it, a reader finds every member without
inflating one, and inflates several at once.

Guarantees:
- what we write is read by `gzip`, `tarfile` and GNU gzip, so by every flambe;
- reading checks every member's CRC-32 and size; a file whose members do not all carry
  a consistent index (flambe's own: one member at zlib level 9) is read as one stream,
  by a helper thread decompressing ahead (isal's `igzip_threaded`) or by `gzip`.

Limits: a member unpacks to at most `MAX_MEMBER_BYTES`; in flight, a stream holds one
member more than it has threads (under 10 MiB each) in memory.

A tarball is streamed into the gzip members (`tar_gz_writer`): each file's size is
given before its bytes, so nothing is staged on disk first.

>>> import tarfile, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m.tar.gz"
>>> with tar_gz_writer(path) as tar:
...     tar.folder("m")
...     tar.file("m/a.txt", b"hello")
>>> with tarfile.open(path, "r:gz") as tar:  # what flambe does
...     tar.getnames(), tar.extractfile("m/a.txt").read()
(['m', 'm/a.txt'], b'hello')
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gzip
import io
import os
import struct
import tarfile
import time
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

_ISAL: Any
"""`isal.igzip_threaded`, or None (its functions are untyped)."""
_ISAL_ZLIB: Any
try:
    from isal import igzip_threaded as _ISAL
    from isal import isal_zlib as _ISAL_ZLIB
    from isal.isal_zlib import error as _IsalError
except ImportError:  # pragma: no cover - isal is a dependency; the fallback is tested
    _ISAL = _ISAL_ZLIB = None

ISAL_LEVEL = 1
"""ISA-L levels go from 0 to 3; tensor data compresses as well at 1 as at 3, faster."""
ZLIB_LEVEL = 1
"""Tensor data compresses to about 92% at any zlib level; level 1 is several times
faster than flambe's 9."""
MEMBER_BYTES = 8 << 20
"""Uncompressed bytes per gzip member: large enough that a member's header and thread
hand-off cost nothing, small enough to keep a few per thread in flight."""
MAX_MEMBER_BYTES = 64 << 20
"""Largest unpacked size a member's index may announce (what a reader allocates)."""
_BLOCK = 1 << 20
_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
_DEPTH = _THREADS + 1
"""Members in flight: enough to keep every thread busy."""
_Item = TypeVar("_Item")
_OWNER = (os.getuid(), os.getgid()) if hasattr(os, "getuid") else (0, 0)

_FEXTRA = 4
_OS_UNKNOWN = 255
_INDEX_ID = b"FC"
_HEADER = struct.Struct("<2sBBIBBH2sHII")
"""magic, method, flags, mtime, extra flags, OS, extra length; then the one subfield:
its id, its length, the member's length in the file, its unpacked size."""
_TRAILER = struct.Struct("<II")
"""CRC-32 and size of the unpacked bytes."""
_MAGIC = b"\x1f\x8b"
_DEFLATE = 8
_SUBFIELD_BYTES = 12

GZIP_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
"""What reading a broken gzip stream raises (`gzip.BadGzipFile` is an `OSError`)."""
if _ISAL is not None:
    GZIP_ERRORS = (*GZIP_ERRORS, cast(type[BaseException], _IsalError))


def fast() -> bool:
    """Whether python-isal is in use."""
    return _ISAL is not None


@contextlib.contextmanager
def gzip_writer(path: Path, use_isal: bool | None = None) -> Iterator[IO[bytes]]:
    """A new file at `path`, written as indexed gzip members deflated in parallel."""
    library, level = _library(use_isal)
    with path.open("xb") as raw, ThreadPoolExecutor(_THREADS) as pool:
        stream = _MemberWriter(raw, pool, functools.partial(_member, library, level))
        try:
            yield cast(IO[bytes], stream)
            stream.finish()
        finally:
            stream.abandon()


@contextlib.contextmanager
def gzip_reader(path: Path, use_isal: bool | None = None) -> Iterator[Unpacked]:
    """The decompressed bytes of the gzip file at `path`, read as a stream."""
    library, _ = _library(use_isal)
    with path.open("rb") as raw:
        members = _member_index(raw.fileno())
        if members is not None:
            with ThreadPoolExecutor(_THREADS) as pool:
                blocks = _ahead(pool, functools.partial(_unpacked_member, raw, library), members)
                try:
                    yield Unpacked(lambda: next(blocks, b""))
                finally:
                    blocks.close()
            return
        if library is _ISAL_ZLIB:
            sequential = _ISAL.open(raw, "rb", threads=1, block_size=_BLOCK)
        else:
            sequential = gzip.GzipFile(fileobj=raw, mode="rb")
        with sequential:
            yield Unpacked(lambda: sequential.read(_BLOCK))


@contextlib.contextmanager
def tar_gz_writer(path: Path, use_isal: bool | None = None) -> Iterator[TarWriter]:
    """A new tar.gz file at `path`, its tarball written member by member (`TarWriter`)."""
    with gzip_writer(path, use_isal) as stream:
        tar = TarWriter(stream)
        yield tar
        tar.close()


class TarWriter:
    """A tarball written front to back, as `tarfile` writes one (pax headers where a
    name needs them), with each member's size given before its bytes.

    A member's bytes are streamed in as they are made, without a copy on disk;
    `member` refuses more or fewer bytes than it announced. Members get the current
    time, modes 0o644 (files) and 0o755 (folders) and the writer's uid and gid.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._offset = 0
        self._mtime = int(time.time())

    def folder(self, name: str) -> None:
        self._header(name, tarfile.DIRTYPE, 0)

    def file(self, name: str, data: ReadableBuffer) -> None:
        """A member holding `data`."""
        view = memoryview(data).cast("B")
        with self.member(name, view.nbytes) as write:
            write(view)

    @contextlib.contextmanager
    def member(self, name: str, size: int) -> Iterator[Callable[[ReadableBuffer], None]]:
        """A member of `size` bytes, which the block writes with the function it gets."""
        self._header(name, tarfile.REGTYPE, size)
        written = 0

        def write(data: ReadableBuffer) -> None:
            nonlocal written
            view = memoryview(data).cast("B")
            written += view.nbytes
            if written > size:
                raise ValueError(f"tar member {name!r} is longer than the {size} bytes announced")
            self._write(view)

        yield write
        if written != size:
            raise ValueError(f"tar member {name!r} got {written} of the {size} bytes announced")
        self._write(bytes(-size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        """The end of the archive: two empty blocks, then zeros to a whole record."""
        end = 2 * tarfile.BLOCKSIZE
        self._write(bytes(end + -(self._offset + end) % tarfile.RECORDSIZE))

    def _header(self, name: str, kind: bytes, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.mtime = kind, size, self._mtime
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        info.uid, info.gid = _OWNER
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _write(self, data: ReadableBuffer) -> None:
        self._stream.write(data)
        self._offset += memoryview(data).nbytes


def _library(use_isal: bool | None) -> tuple[Any, int]:
    """The deflate module to use (`isal_zlib`, or `zlib`: the same functions) and its level."""
    if use_isal if use_isal is not None else fast():
        return _ISAL_ZLIB, ISAL_LEVEL
    return zlib, ZLIB_LEVEL


def _member(library: Any, level: int, chunk: bytearray) -> bytes:
    """`chunk` as one complete, indexed gzip member."""
    body = library.compress(chunk, level, wbits=-15)
    crc = library.crc32(chunk)
    length = _HEADER.size + len(body) + _TRAILER.size
    header = _HEADER.pack(
        _MAGIC,
        _DEFLATE,
        _FEXTRA,
        0,
        0,
        _OS_UNKNOWN,
        _SUBFIELD_BYTES,
        _INDEX_ID,
        _SUBFIELD_BYTES - 4,
        length,
        len(chunk),
    )
    return b"".join((header, body, _TRAILER.pack(crc, len(chunk))))


def _member_index(fd: int) -> list[tuple[int, int, int]] | None:
    """Every member's (offset, length, unpacked size), if all carry a consistent index
    tiling the file exactly; None otherwise (the file is read as one stream)."""
    size = os.fstat(fd).st_size
    members = []
    offset = 0
    while offset < size:
        head = os.pread(fd, _HEADER.size, offset)
        if len(head) < _HEADER.size:
            return None
        magic, method, flags, _, _, _, extra, field, field_bytes, length, unpacked = _HEADER.unpack(
            head
        )
        if (
            (magic, method, flags, extra, field, field_bytes)
            != (_MAGIC, _DEFLATE, _FEXTRA, _SUBFIELD_BYTES, _INDEX_ID, _SUBFIELD_BYTES - 4)
            or length < _HEADER.size + _TRAILER.size
            or offset + length > size
            or unpacked > MAX_MEMBER_BYTES
        ):
            return None
        members.append((offset, length, unpacked))
        offset += length
    return members or None


def _unpacked_member(raw: IO[bytes], library: Any, member: tuple[int, int, int]) -> bytes:
    """Read and inflate one indexed member, checking its CRC-32 and size."""
    offset, length, unpacked = member
    data = os.pread(raw.fileno(), length, offset)
    if len(data) != length:
        raise gzip.BadGzipFile(f"the gzip member at byte {offset} is cut short")
    inflater = library.decompressobj(-15)
    out: bytes = inflater.decompress(memoryview(data)[_HEADER.size : -_TRAILER.size], unpacked)
    crc, size = _TRAILER.unpack_from(data, length - _TRAILER.size)
    if not inflater.eof or inflater.unused_data or len(out) != unpacked or size != unpacked:
        raise gzip.BadGzipFile(f"the gzip member at byte {offset} does not match its index")
    if library.crc32(out) != crc:
        raise gzip.BadGzipFile(f"the gzip member at byte {offset} fails its CRC-32 check")
    return out


class _MemberWriter(io.RawIOBase):
    """Fills chunks of `MEMBER_BYTES` with what is written and writes each one's member
    in order, deflating up to `_DEPTH` of them at once."""

    def __init__(
        self, raw: IO[bytes], pool: ThreadPoolExecutor, member: Callable[[bytearray], bytes]
    ):
        self._raw = raw
        self._pool = pool
        self._member = member
        self._chunk = bytearray(MEMBER_BYTES)
        self._filled = 0
        self._taken = 0
        self._pending: collections.deque[Future[bytes]] = collections.deque()

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._taken

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            count = min(len(view) - done, MEMBER_BYTES - self._filled)
            self._chunk[self._filled : self._filled + count] = view[done : done + count]
            self._filled += count
            done += count
            if self._filled == MEMBER_BYTES:
                self._submit(self._chunk)
                self._chunk, self._filled = bytearray(MEMBER_BYTES), 0
        self._taken += done
        return done

    def finish(self) -> None:
        """Write the last member and wait for all of them (an empty file gets one)."""
        if self._filled or not self._taken:
            self._submit(self._chunk[: self._filled])
            self._filled = 0
        while self._pending:
            self._write_oldest()

    def abandon(self) -> None:
        for pending in self._pending:
            pending.cancel()
        self._pending.clear()

    def _submit(self, chunk: bytearray) -> None:
        self._pending.append(self._pool.submit(self._member, chunk))
        while len(self._pending) > _DEPTH:
            self._write_oldest()

    def _write_oldest(self) -> None:
        self._raw.write(self._pending.popleft().result())


def _ahead(
    pool: ThreadPoolExecutor, work: Callable[[_Item], bytes], items: Iterable[_Item]
) -> Generator[bytes, None, None]:
    """`work` of each item in order, done on `pool` up to `_DEPTH` items ahead."""
    pending: collections.deque[Future[bytes]] = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= _DEPTH:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


class Unpacked(io.RawIOBase):
    """Decompressed bytes, block after block from `next_block` (empty at the end).

    It reads, tells, and seeks forward only (a backward seek raises
    `io.UnsupportedOperation`), which is all `tarfile.TarFile` needs to read the
    members of a stream in order without copying their data through its own buffers.
    """

    def __init__(self, next_block: Callable[[], bytes]):
        self._next_block = next_block
        self._block = b""
        self._at = 0
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a gzip stream seeks from its start or position only")
        if offset < self._position:
            raise io.UnsupportedOperation("a gzip stream seeks forward only")
        while self._position < offset and self.read(offset - self._position):
            pass
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all that is left for a negative `size`), at most one
        block's worth at a time; empty only at the end."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_BLOCK), b""))
        while self._at == len(self._block):
            self._block, self._at = self._next_block(), 0
            if not self._block:
                return b""
        if self._at == 0 and size >= len(self._block):
            data = self._block  # a whole block, not copied
        else:
            data = self._block[self._at : self._at + size]
        self._at += len(data)
        self._position += len(data)
        return data

    def readinto(self, buffer: WriteableBuffer) -> int:
        target = memoryview(buffer).cast("B")
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

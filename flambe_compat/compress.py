"""Gzip streams of tar.gz archives: fast when python-isal is installed, standard always.

flambe 0.4.x reads a tar.gz with `tarfile.open(path, "r:gz")`: any standard gzip
stream (RFC 1952) will do. flambe wrote it with the standard library's zlib at level 9,
on one core, at a few MB/s for tensor data, which barely compresses. When `isal`
(python-isal, ISA-L's deflate) is importable, archives are written with it at
`ISAL_LEVEL` on a helper thread, and read with a helper thread decompressing ahead:
several times faster, and the same format. Without it the standard library's `gzip`
does the same at `ZLIB_LEVEL`.

>>> import io, tarfile, tempfile, pathlib
>>> work = pathlib.Path(tempfile.mkdtemp())
>>> _ = (work / "m").mkdir(), (work / "m" / "a.txt").write_text("hello")
>>> write_tar_gz(work / "m", "m", work / "m.tar.gz")
>>> with tarfile.open(work / "m.tar.gz", "r:gz") as tar:  # what flambe does
...     tar.getnames()
['m', 'm/a.txt']
"""

from __future__ import annotations

import contextlib
import gzip
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

_ISAL: Any
"""`isal.igzip_threaded`, or None (its functions are untyped)."""
try:
    from isal import igzip_threaded as _ISAL
    from isal.isal_zlib import error as _IsalError
except ImportError:  # pragma: no cover - isal is a dependency; the fallback is tested
    _ISAL = None

ISAL_LEVEL = 1
"""ISA-L levels go from 0 to 3; tensor data compresses as well at 1 as at 3, faster."""
ZLIB_LEVEL = 1
"""Tensor data compresses to about 92% at any zlib level; level 1 is several times
faster than flambe's 9."""
_BLOCK = 1 << 20

GZIP_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
"""What reading a broken gzip stream raises (`gzip.BadGzipFile` is an `OSError`)."""
if _ISAL is not None:
    GZIP_ERRORS = (*GZIP_ERRORS, cast(type[BaseException], _IsalError))


def fast() -> bool:
    """Whether python-isal is in use."""
    return _ISAL is not None


@contextlib.contextmanager
def gzip_writer(path: Path, use_isal: bool | None = None) -> Iterator[IO[bytes]]:
    """A new file at `path` compressed as one standard gzip member."""
    with path.open("xb") as raw:
        if use_isal if use_isal is not None else fast():
            stream = _ISAL.open(raw, "wb", compresslevel=ISAL_LEVEL, threads=1, block_size=_BLOCK)
        else:
            stream = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=ZLIB_LEVEL, mtime=0)
        with stream:
            yield stream


@contextlib.contextmanager
def gzip_reader(path: Path, use_isal: bool | None = None) -> Iterator[IO[bytes]]:
    """The decompressed bytes of the gzip file at `path`, read as a stream."""
    with path.open("rb") as raw:
        if use_isal if use_isal is not None else fast():
            stream = _ISAL.open(raw, "rb", threads=1, block_size=_BLOCK)
        else:
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        with stream:
            yield stream


def write_tar_gz(folder: Path, arcname: str, target: Path, use_isal: bool | None = None) -> None:
    """Tar the file or folder `folder` as `arcname` into the new tar.gz file `target`."""
    with gzip_writer(target, use_isal) as stream, tarfile.open(fileobj=stream, mode="w|") as tar:
        tar.add(folder, arcname=arcname)

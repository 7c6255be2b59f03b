"""Containers: how an archive is packed (a folder, a pickle, or either one in a tar.gz).

`opened(path)` yields the archive as a local folder or pickle file. A tar.gz is
unpacked into a private temporary folder that is removed afterwards, whatever happens
(a killed process's, by the next unpack: `scratch`);
members are checked before a byte is written: regular files and folders only (no
links, devices or FIFOs), relative names without `..`, no duplicates, one root, and a
cap on the unpacked size against gzip bombs.

>>> from pathlib import Path
>>> container_kind(Path("fixtures/flambe-corpus/0.4.18-zip/counter-dir"))
'folder'
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from .compress import GZIP_ERRORS, Unpacked, gzip_reader
from .errors import LoadError
from .scratch import temporary_folder

ContainerKind = Literal["folder", "pickle", "tar.gz"]

GZIP_MAGIC = b"\x1f\x8b"
MAX_UNPACKED_ENV = "FLAMBE_COMPAT_MAX_UNPACKED_BYTES"
MIN_UNPACKED_CAP = 1 << 30
"""Tarballs may always unpack to 1 GiB; beyond, to `UNPACK_RATIO` times their size."""
UNPACK_RATIO = 50
MAX_MEMBERS = 10_000
"""More members than any flambe archive has (7 files a node): refused fast, not after minutes."""
MAX_DEPTH = 100
"""Deepest member path accepted: deeper trees defeat recursive walks (and `shutil.rmtree`)."""
MAX_HEADER_BYTES = 1 << 20
"""Largest pax or GNU long-name header accepted: tarfile reads a whole one into memory."""
_EXTENDED_HEADERS = {
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
}


@dataclass(frozen=True)
class Opened:
    """An archive made local: `payload` is the save folder or the pickle file."""

    source: Path
    container: ContainerKind
    payload: Path
    member_prefix: str = ""
    """Tarballs only: the name of the root member (the whole save path before 0.4.9)."""

    @property
    def is_folder(self) -> bool:
        return self.payload.is_dir()


def container_kind(path: Path) -> ContainerKind:
    """Tell the container from the file system and magic bytes, reading a few bytes."""
    if path.is_symlink() and not path.exists():
        raise LoadError(f"{path}: a broken symbolic link")
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise LoadError(f"{path}: no such file or directory")
    if not path.is_file():
        raise LoadError(f"{path}: not a regular file or folder")
    with path.open("rb") as file:
        head = file.read(2)
    if not head:
        raise LoadError(f"{path}: the file is empty")
    return "tar.gz" if head == GZIP_MAGIC else "pickle"


def unpack_cap(compressed_size: int) -> int:
    """How many bytes a tarball of `compressed_size` may unpack to."""
    override = os.environ.get(MAX_UNPACKED_ENV)
    if override:
        return int(override)
    return max(MIN_UNPACKED_CAP, UNPACK_RATIO * compressed_size)


@contextlib.contextmanager
def opened(path: str | os.PathLike[str]) -> Iterator[Opened]:
    """The archive at `path` as a local folder or pickle file, for the time of the block."""
    source = Path(path)
    kind = container_kind(source)
    if kind != "tar.gz":
        yield Opened(source, kind, source)
        return
    with temporary_folder("unpack") as scratch:
        root = _unpack(source, scratch)
        yield Opened(source, "tar.gz", scratch / root, member_prefix=root)


def _unpack(source: Path, into: Path) -> str:
    """Unpack a tar.gz member by member into `into`; returns the root member's name."""
    cap = unpack_cap(source.stat().st_size)
    written = 0
    seen: set[str] = set()
    root = ""
    try:
        with (
            gzip_reader(source) as stream,
            tarfile.TarFile(fileobj=stream, mode="r", tarinfo=_header_checker(source, cap)) as tar,
        ):
            for count, member in enumerate(tar, start=1):
                name = _checked_name(source, member)
                if member.size < 0:
                    raise LoadError(f"{source}: tar member {name!r} has a negative size")
                if count > MAX_MEMBERS:
                    raise LoadError(f"{source}: more than {MAX_MEMBERS} tar members")
                if name in seen:
                    raise LoadError(f"{source}: tar member {name!r} appears twice")
                seen.add(name)
                if not root:
                    root = name
                elif not name.startswith(root + "/"):
                    raise LoadError(f"{source}: tar member {name!r} lies outside the root {root!r}")
                target = into / name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                written += member.size
                if written > cap:
                    raise LoadError(
                        f"{source}: unpacks to more than {cap} bytes (a gzip bomb?); "
                        f"set {MAX_UNPACKED_ENV} to allow more"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_member(source, stream, member, target)
    except _UNREADABLE_TAR as error:
        raise LoadError(f"{source}: not a readable tar.gz archive ({error})") from error
    except RecursionError:
        raise LoadError(f"{source}: not a readable tar.gz archive (chained headers)") from None
    if not root:
        raise LoadError(f"{source}: the tar.gz archive is empty")
    return root


def _header_checker(source: Path, cap: int) -> type[tarfile.TarInfo]:
    """A `TarInfo` class refusing a header before tarfile reads what it announces.

    tarfile reads a pax or GNU long-name header whole into memory and skips or reads the
    data of every member: a header announcing gigabytes is refused here, from its size
    field, as are sparse members and any member whose data would end past `cap` bytes
    of the uncompressed stream.
    """

    class CheckedTarInfo(tarfile.TarInfo):
        def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise LoadError(f"{source}: tar member {self.name!r} is sparse, which is refused")
            if self.type in _EXTENDED_HEADERS and self.size > MAX_HEADER_BYTES:
                raise LoadError(
                    f"{source}: a tar extended header announces {self.size} bytes "
                    f"(at most {MAX_HEADER_BYTES})"
                )
            if self.offset + tarfile.BLOCKSIZE + self.size > cap:
                raise LoadError(
                    f"{source}: unpacks to more than {cap} bytes (a gzip bomb?); "
                    f"set {MAX_UNPACKED_ENV} to allow more"
                )
            member: tarfile.TarInfo = super()._proc_member(archive)  # type: ignore[misc]
            return member

    return CheckedTarInfo


_UNREADABLE_TAR: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    *GZIP_ERRORS,
    ValueError,  # tarfile's GNU sparse parsing of pax headers does not wrap its errors
    TypeError,  # nor does its gzip header parsing: ord() of a truncated field
)


def _checked_name(source: Path, member: tarfile.TarInfo) -> str:
    """The member's name, if it is a plain relative file or folder."""
    kind = (
        "symbolic link"
        if member.issym()
        else "hard link"
        if member.islnk()
        else "device or FIFO"
        if not (member.isfile() or member.isdir())
        else ""
    )
    if kind:
        raise LoadError(f"{source}: tar member {member.name!r} is a {kind}, which is refused")
    name = member.name.rstrip("/")
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or name.startswith(("/", "\\")) or ".." in pure.parts:
        raise LoadError(f"{source}: tar member {member.name!r} has an unsafe path")
    if any(part in ("", ".") for part in name.split("/")) or "\x00" in name:
        raise LoadError(f"{source}: tar member {member.name!r} has an unsafe path")
    if len(pure.parts) > MAX_DEPTH:
        raise LoadError(f"{source}: tar member {name[:80]!r}... lies over {MAX_DEPTH} folders deep")
    return name


def _copy_member(source: Path, stream: Unpacked, member: tarfile.TarInfo, target: Path) -> None:
    """Copy a member's data from the stream (which tarfile reads only headers from)."""
    stream.seek(member.offset_data)
    left = member.size
    with target.open("xb") as out:
        while left:
            data = stream.read(left)
            if not data:
                raise LoadError(f"{source}: tar member {member.name!r} is cut short")
            out.write(data)
            left -= len(data)

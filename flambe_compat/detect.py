"""Detection: an archive's protocol and revision, and each payload's format, unpickling nothing.

Everything here comes from names, magic bytes, the small text files and pickle opcodes.

>>> payload_format(b"PK\\x03\\x04...")
'zip'
>>> payload_format(b"\\x80\\x02}q\\x00.")
'pickle'
"""

from __future__ import annotations

import io
import pickletools
import tarfile
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from .container import Opened
from .errors import LoadError
from .layout import (
    MANIFEST_FILE_NAME,
    PROTOCOL_VERSION_FILE_NAME,
    REQUIREMENTS_FILE_NAME,
    STASH_FILE_NAME,
    STATE_FILE_NAME,
)

PayloadFormat = Literal["zip", "legacy", "pickle", "unknown"]

ZIP_MAGIC = b"PK\x03\x04"
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
"""Pickle protocol 2, then `LONG1` of torch's magic number 0x1950a86a20f9469cfc6c."""
HEAD_SIZE = tarfile.BLOCKSIZE
MAX_FOLDER_DEPTH = 100
"""Deeper save folders are refused (flambe graphs are a few Components deep)."""
MAX_ROOT_PICKLE_BYTES = 64 << 20
"""A root `data.pkl` larger than this is not scanned by detection (it holds no tensors)."""


def payload_format(head: bytes) -> PayloadFormat:
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


def _is_tar_header(block: bytes) -> bool:
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


Revision = Literal["1.0", "1.1", "1.2", "1.3", "1.4", "2.0"]
REVISIONS: tuple[Revision, ...] = ("1.0", "1.1", "1.2", "1.3", "1.4", "2.0")
"""Every revision we know, oldest first (DESIGN.md section 2; 2.0 is ours)."""


@dataclass(frozen=True)
class Detection:
    """What an archive is: its layout, protocol and revision, and each payload's format.

    `revision` is the latest revision consistent with what the archive shows, or `None`
    with the `reasons` it fits none.
    """

    layout: Literal["folder", "pickle"]
    protocol: int | None
    revision: Revision | None
    payload_formats: dict[str, PayloadFormat]
    reasons: tuple[str, ...] = ()


def detect(archive: Opened) -> Detection:
    """Detect an opened archive's protocol and revision without unpickling anything.

    >>> from flambe_compat.container import opened
    >>> with opened("fixtures/flambe-corpus/0.4.13-legacy/wrapper-tgz.tar.gz") as archive:
    ...     detect(archive).revision
    '1.3'
    """
    if not archive.is_directory:
        return _detect_pickle(archive)
    root = archive.payload
    formats = {
        path.relative_to(root).as_posix(): file_payload_format(path)
        for folder in archive_folders(root)
        for path in sorted(folder.iterdir())
        if path.suffix in (".pt", ".pkl") and path.is_file() and not path.is_symlink()
    }
    protocol = _small_text(root / PROTOCOL_VERSION_FILE_NAME)
    if (root / MANIFEST_FILE_NAME).exists() or protocol == "2":
        return Detection("folder", 2, "2.0", formats)
    if protocol is None:
        reason = "not a flambe save folder: no protocol_version.txt at its root"
        return Detection("folder", None, None, formats, (reason,))
    if protocol != "1":
        reason = f"protocol_version.txt says {protocol[:20]!r}: not a protocol we know (1 or 2)"
        return Detection("folder", None, None, formats, (reason,))
    return _detect_protocol1(archive, formats)


def _detect_pickle(archive: Opened) -> Detection:
    kind = file_payload_format(archive.payload)
    formats = {archive.payload.name: kind}
    if kind == "zip":
        return Detection("pickle", 2, "2.0", formats)
    if kind != "pickle":
        return Detection("pickle", None, None, formats, ("not a pickle nor a torch file",))
    # flambe's pickle-only format never changed; only whole-path tar members date it.
    whole_path = "/" in archive.member_prefix
    return Detection("pickle", 1, "1.1" if whole_path else "1.4", formats)


def _detect_protocol1(archive: Opened, formats: dict[str, PayloadFormat]) -> Detection:
    root = archive.payload
    raw_stash = sorted(
        p for p, f in formats.items() if p.endswith(STASH_FILE_NAME) and f == "pickle"
    )
    whole_path = "/" in archive.member_prefix
    requirements = (root / REQUIREMENTS_FILE_NAME).is_file()
    metadata = _mentions_metadata(root / STATE_FILE_NAME)
    features = {
        "raw-pickle stash.pkl (1.0)": bool(raw_stash),
        "tar members named by the whole save path (1.0-1.1)": whole_path,
        "state.pt with _metadata (1.3+)": metadata,
        "requirements.txt (1.4)": requirements,
    }
    shown = [feature for feature, present in features.items() if present]
    revision: Revision
    if raw_stash:
        revision, newer = "1.0", metadata or requirements
    elif whole_path:
        revision, newer = "1.1", metadata or requirements
    elif requirements:  # a root state.pt without metadata is then the schema's to report
        revision, newer = "1.4", False
    elif metadata:
        revision, newer = "1.3", False
    else:
        revision, newer = "1.2", False
    if newer:
        return Detection(
            "folder", 1, None, formats, (f"fits no known revision: shows {', '.join(shown)}",)
        )
    return Detection("folder", 1, revision, formats)


def _small_text(path: Path) -> str | None:
    """The first bytes of a small text file; `None` unless it is a regular file."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        with path.open("rb") as file:
            return file.read(64).decode("utf-8", "replace").strip()
    except OSError:
        return None


def archive_folders(root: Path) -> list[Path]:
    """The save folder and every folder below it (never through a link), parents first.

    Walked without recursion, and refused past `MAX_FOLDER_DEPTH` levels.
    """
    folders: list[Path] = []
    queue = deque([(root, 0)])
    while queue:
        folder, depth = queue.popleft()
        if depth > MAX_FOLDER_DEPTH:
            raise LoadError(f"{folder}: folders nested deeper than {MAX_FOLDER_DEPTH} levels")
        folders.append(folder)
        queue.extend(
            (child, depth + 1)
            for child in sorted(folder.iterdir())
            if child.is_dir() and not child.is_symlink()
        )
    return folders


def _mentions_metadata(path: Path) -> bool:
    """Whether the main pickle of a torch file stores a `_metadata` attribute (opcodes only)."""
    try:
        kind = file_payload_format(path)
        with path.open("rb") as file:
            if kind == "zip":
                with zipfile.ZipFile(file) as archive:
                    name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
                    if archive.getinfo(name).file_size > MAX_ROOT_PICKLE_BYTES:
                        return False
                    return _pickle_mentions(io.BytesIO(archive.read(name)), "_metadata")
            if kind == "legacy":
                for _ in range(3):  # magic number, protocol, system info
                    _pickle_mentions(file, "")
                return _pickle_mentions(file, "_metadata")
    except (OSError, ValueError, StopIteration, zipfile.BadZipFile, EOFError):
        return False
    return False


def _pickle_mentions(file: IO[bytes], text: str) -> bool:
    found = False
    for opcode, argument, _ in pickletools.genops(file):
        if opcode.name in _STRING_OPCODES and argument == text:
            found = True
    return found


_STRING_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}

"""Detection: an archive's protocol and revision, and each payload's format, unpickling nothing.

Everything here comes from names, magic bytes, the small text files and pickle opcodes;
which features date which revision is `flambe_compat.revisions`' table.

>>> from flambe_compat.container import opened
>>> with opened("fixtures/flambe-corpus/0.4.13-legacy/wrapper-tgz.tar.gz") as archive:
...     detect(archive).revision
'1.3'
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .container import Opened
from .layout import (
    MANIFEST_FILE_NAME,
    PICKLE_SUFFIX,
    PROTOCOL_1,
    PROTOCOL_2,
    PROTOCOL_VERSION_FILE_NAME,
    REQUIREMENTS_FILE_NAME,
    STASH_FILE_NAME,
    STATE_FILE_NAME,
)
from .listing import Folder, walk
from .payload import PayloadFile, PayloadFormat, read_payload_file, scan_pickle
from .revisions import (
    LATEST,
    NODE_METADATA,
    PICKLE_REVISIONS,
    RAW_STASH,
    REQUIREMENTS,
    WHOLE_PATH_MEMBERS,
    Revision,
    revision_of,
)
from .ziprecords import zip_pickle

PAYLOAD_SUFFIXES = (".pt", PICKLE_SUFFIX)
"""Files whose format detection reports (`state.pt`, `stash.pkl`, pickle-only archives)."""


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


def payload_files(folders: list[Folder], whole: bool = False) -> dict[str, PayloadFile]:
    """Every payload of a walked save folder, sniffed, by path relative to the folder;
    with `whole` (for a load), the small ones read whole while sniffing them."""
    return {
        folder.join(name): read_payload_file(folder.path / name, size, whole)
        for folder in folders
        for name, size in folder.files.items()
        if name.endswith(PAYLOAD_SUFFIXES)
    }


def detect(
    archive: Opened,
    folders: list[Folder] | None = None,
    payloads: Mapping[str, PayloadFile] | None = None,
    protocol: str | None = None,
) -> Detection:
    """Detect an opened archive's protocol and revision without unpickling anything.

    `folders` (the walk of a save folder), `payloads` (its payload files, read) and
    `protocol` (its `folder_protocol`) are passed by callers that already have them.
    """
    if not archive.is_folder:
        payload = read_payload_file(archive.payload, archive.payload.stat().st_size)
        return _detect_pickle(archive, payload)
    if payloads is None:
        payloads = payload_files(walk(archive.payload) if folders is None else folders)
    formats = {path: payload.format for path, payload in payloads.items()}
    root = archive.payload
    protocol = folder_protocol(root) if protocol is None else protocol
    if protocol == str(PROTOCOL_2):
        return Detection("folder", PROTOCOL_2, LATEST, formats)
    if protocol is None:
        reason = "not a flambe save folder: no protocol_version.txt at its root"
        return Detection("folder", None, None, formats, (reason,))
    if protocol != str(PROTOCOL_1):
        reason = f"protocol_version.txt says {protocol[:20]!r}: not a protocol we know (1 or 2)"
        return Detection("folder", None, None, formats, (reason,))
    root_state = payloads.get(STATE_FILE_NAME)
    present = {
        RAW_STASH: any(
            path.endswith(STASH_FILE_NAME) and kind == "pickle" for path, kind in formats.items()
        ),
        WHOLE_PATH_MEMBERS: "/" in archive.member_prefix,
        NODE_METADATA: root_state is not None and _mentions_metadata(root_state),
        REQUIREMENTS: (root / REQUIREMENTS_FILE_NAME).is_file(),
    }
    shown = {feature for feature, here in present.items() if here}
    row = revision_of(shown)
    if row is None:
        listed = ", ".join(feature for feature in present if feature in shown)
        return Detection("folder", 1, None, formats, (f"fits no known revision: shows {listed}",))
    return Detection("folder", 1, row.name, formats)


def _detect_pickle(archive: Opened, payload: PayloadFile) -> Detection:
    formats = {archive.payload.name: payload.format}
    if payload.format == "zip":
        return Detection("pickle", PROTOCOL_2, PICKLE_REVISIONS[PROTOCOL_2], formats)
    if payload.format != "pickle":
        return Detection("pickle", None, None, formats, ("not a pickle nor a torch file",))
    # flambe's pickle-only format never changed; only whole-path tar members date it.
    whole_path = "/" in archive.member_prefix
    revision: Revision = "1.1" if whole_path else PICKLE_REVISIONS[PROTOCOL_1]
    return Detection("pickle", PROTOCOL_1, revision, formats)


def folder_protocol(root: Path) -> str | None:
    """The protocol a save folder says it is in (`"2"` when it has a manifest), as text;
    `None` without `protocol_version.txt`."""
    if (root / MANIFEST_FILE_NAME).exists():
        return str(PROTOCOL_2)
    return _small_text(root / PROTOCOL_VERSION_FILE_NAME)


def _small_text(path: Path) -> str | None:
    """The first bytes of a small text file; `None` unless it is a regular file."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        with path.open("rb") as file:
            return file.read(64).decode("utf-8", "replace").strip()
    except OSError:
        return None


def _mentions_metadata(payload: PayloadFile) -> bool:
    """Whether the main pickle of a torch file stores a `_metadata` attribute (opcodes only)."""
    try:
        with payload.open() as file:
            if payload.format == "zip":
                scan = scan_pickle(zip_pickle(file))
            elif payload.format == "legacy":
                for _ in range(3):  # magic number, protocol, system info
                    if not scan_pickle(file).complete:
                        return False
                scan = scan_pickle(file)
            else:
                return False
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError):
        return False
    return scan.complete and "_metadata" in scan.strings

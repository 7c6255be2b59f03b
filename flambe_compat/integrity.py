"""Integrity of protocol 2 archives: `manifest.json` and the pickle header, as read.

Every load of a protocol 2 folder checks its manifest against `schemas/2.0.json`
(`read_manifest`), then the files against the manifest (`check_files`): by default every
file's size is compared, every file of at most `HASH_LIMIT` (16 MiB) is hashed, and files
missing from the archive or absent from the manifest are reported. So a flipped byte is
caught in every file but a payload larger than 16 MiB, whose tensor bytes
`torch.load(mmap=True)` should not have to read up front (torch checks no CRC of them
either); `verify=True` hashes those too: a full read. A flip inside `manifest.json`
itself is caught when it breaks the JSON, the schema, or a listed size or checksum.
sha256 runs at about 1.5 GB/s per core; files over 1 MiB are hashed on all cores.

A pickle-only protocol 2 archive holds `{"flambe_compat": header, "state": ...,
"metadata": ...}`; `state_from_payload` checks it against `schemas/pickle-2.0.json` and
turns it back into a `State`.

>>> read_manifest(Path("no/such/folder"))
Traceback (most recent call last):
...
flambe_compat.errors.LoadError: no/such/folder/manifest.json: missing, ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .describe import jsonable
from .digest import sha256_all
from .errors import LoadError
from .layout import FLAMBE_DIRECTORIES_KEY, MANIFEST_FILE_NAME
from .listing import Folder, listing, walk
from .problems import Problem
from .schema import schema_problems
from .state import State

MANIFEST_SCHEMA = "2.0.json"
PICKLE_SCHEMA = "pickle-2.0.json"
HASH_LIMIT = 16 << 20
"""Files larger than this are only size-checked unless `verify=True`."""
MAX_MANIFEST_BYTES = 256 << 20


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the folder `root`, checked against `schemas/2.0.json`.

    Raises `LoadError` naming `manifest.json` when it is missing (an incomplete
    archive), not JSON, or breaks the schema (every broken rule is listed).
    """
    path = root / MANIFEST_FILE_NAME
    try:
        if path.is_symlink() or not path.is_file():
            raise LoadError(
                f"{path}: missing, so the archive is incomplete (protocol 2 "
                "writes manifest.json last, as its commit marker)"
            )
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise LoadError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
        manifest = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise LoadError(f"{path}: not valid JSON ({error})") from None
    except OSError as error:
        raise LoadError(f"{path}: cannot be read ({error.strerror})") from None
    if not isinstance(manifest, dict):
        raise LoadError(f"{path}: holds a JSON {type(manifest).__name__}, not an object")
    problems = schema_problems(manifest, MANIFEST_SCHEMA)
    if problems:
        raise LoadError(_schema_message(path, MANIFEST_SCHEMA, problems))
    return manifest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _schema_message(path: Path, schema: str, problems: list[Problem]) -> str:
    listing = "; ".join(f"{problem.message[:300]} [{problem.rule}]" for problem in problems)
    count = f"{len(problems)} problem{'s' * (len(problems) != 1)}"
    return f"{path}: does not follow schema {schema} ({count}): {listing}"


def check_files(
    root: Path,
    manifest: dict[str, Any],
    verify: bool = False,
    folders: list[Folder] | None = None,
    digests: Mapping[str, str] | None = None,
) -> list[Problem]:
    """The files of `root` that differ from `manifest`: missing, unlisted, resized, altered.

    Sizes are always compared; sha256 for files of at most `HASH_LIMIT` bytes, or for
    every file with `verify=True`. `manifest` must have passed `read_manifest`;
    `folders` is the walk of `root` and `digests` the sha256 of files already read (by
    relative path), when there are. A file that cannot be read at all raises `LoadError`
    naming it.
    """
    digests = digests or {}
    try:
        found = listing(walk(root) if folders is None else folders)
        listed = {entry["path"]: entry for entry in manifest["files"]}
        problems = [
            Problem(path, "manifest-files", "not listed in manifest.json")
            for path in sorted(found.keys() - listed.keys() - {MANIFEST_FILE_NAME})
        ]
        to_hash = []
        for path, entry in sorted(listed.items()):
            size = found.get(path, -1)
            if size == -1:
                problems.append(
                    Problem(path, "manifest-files", "missing (listed in manifest.json)")
                )
            elif size is None:
                problems.append(Problem(path, "links", "links and special files are refused"))
            elif size != entry["size"]:
                message = f"{size} bytes, but manifest.json says {entry['size']}"
                problems.append(Problem(path, "manifest-size", message))
            elif verify or size <= HASH_LIMIT:
                to_hash.append(entry)
        unread = [entry for entry in to_hash if entry["path"] not in digests]
        hashed = dict(
            zip(
                (entry["path"] for entry in unread),
                sha256_all([(root / entry["path"], entry["size"]) for entry in unread]),
                strict=True,
            )
        )
    except OSError as error:
        raise LoadError(f"{error.filename}: cannot be read ({error.strerror})") from None
    for entry in to_hash:
        digest = digests.get(entry["path"]) or hashed[entry["path"]]
        if digest != entry["sha256"]:
            message = f"sha256 {digest} differs from manifest.json's {entry['sha256']}"
            problems.append(Problem(entry["path"], "manifest-sha256", message))
    return problems


def state_from_payload(value: Any, path: Path) -> State:
    """The `State` of an unpickled `pickle_payload`, once it passes `schemas/pickle-2.0.json`.

    Raises `LoadError` naming `path` and every broken rule.
    """
    if not isinstance(value, dict):
        raise LoadError(f"{path}: holds a {type(value).__name__}, not a protocol 2 pickle")
    try:
        view = {
            key: dict.fromkeys(part)
            if key == "state" and isinstance(part, dict)
            else jsonable(part)
            for key, part in value.items()
        }
    except ValueError as error:
        raise LoadError(f"{path}: {error}") from None
    problems = schema_problems(view, PICKLE_SCHEMA)
    if problems:
        raise LoadError(_schema_message(path, PICKLE_SCHEMA, problems))
    state = State(value["state"])
    state._metadata = dict(value["metadata"])
    state._metadata[FLAMBE_DIRECTORIES_KEY] = set(state._metadata[FLAMBE_DIRECTORIES_KEY])
    return state

"""Protocol 2's self-description, as written: `manifest.json` of a save folder, the header
of a pickle.

A protocol 2 folder is a protocol 1 folder (with `protocol_version.txt` = `2`, payloads
in torch's zip format) plus `manifest.json` at its root, written last: an archive without
it is incomplete. The manifest follows `schemas/2.0.json`: writer, creation time, every
node (class, semver, config, keys, tensor dtypes and shapes), every other file with its
size and sha256, and whether a payload names a global outside the allow-list
(`trusted_decoding_required`, `unsafe_globals`; found by `payload.scan_pickle`, which
reads pickle opcodes and unpickles nothing). Reading and checking it is
`flambe_compat.integrity`'s.

A pickle-only protocol 2 archive holds `pickle_payload(state)`: `{"flambe_compat": header,
"state": ..., "metadata": ...}`.

>>> header()["revision"]
'2.0'
"""

from __future__ import annotations

import json
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .digest import sha256_all
from .digest import sha256_file as sha256_file  # the writer hashes with it
from .layout import (
    KEEP_VARS_KEY,
    MANIFEST_FILE_NAME,
    PICKLE_HEADER_KEY,
    STASH_FILE_NAME,
    STATE_DICT_DELIMETER,
    STATE_FILE_NAME,
)
from .layout import PROTOCOL_2 as PROTOCOL_2
from .listing import listing, walk
from .payload import pickle_record, scan_pickle
from .state import State
from .tree import SaveTreeNode, _traverse_all_nodes
from .unpickle import allowed_globals

FORMAT = "flambe-compat"
REVISION = "2.0"


def header(original_revision: str | None = None) -> dict[str, Any]:
    """What every protocol 2 archive says about itself (`$defs/header` of the schema)."""
    from . import __version__  # the package imports this module while it initialises

    created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return {
        "format": FORMAT,
        "protocol": PROTOCOL_2,
        "revision": REVISION,
        "writer": {"name": FORMAT, "version": __version__},
        "created": created.replace("+00:00", "Z"),
        "original_revision": original_revision,
    }


def build_manifest(
    root: Path,
    tree: SaveTreeNode,
    original_revision: str | None = None,
    digests: Mapping[Path, str] | None = None,
) -> dict[str, Any]:
    """The manifest of the save folder `root`, written from `tree` (all files in place).

    `digests` holds sha256 digests already known (computed while writing), by path.

    Nodes are listed by folder path, so parents come first and the order is stable.
    """
    nodes = [
        manifest_node(path, node)
        for path, node in sorted(_traverse_all_nodes(tree), key=lambda item: item[0])
    ]
    named = {
        name
        for path, _ in _traverse_all_nodes(tree)
        for payload in (STATE_FILE_NAME, STASH_FILE_NAME)
        for name in scan_pickle(_torch_pickle(root.joinpath(*path, payload))).globals
    }
    unsafe = unsafe_globals(named)
    return {
        **header(original_revision),
        "keep_vars": bool(getattr(tree.state, "_metadata", {}).get(KEEP_VARS_KEY, False)),
        "directories": sorted(node["prefix"] for node in nodes),
        "nodes": nodes,
        "files": _describe_files(root, digests or {}),
        "trusted_decoding_required": bool(unsafe),
        "unsafe_globals": unsafe,
    }


def manifest_node(path: list[str], node: SaveTreeNode) -> dict[str, Any]:
    return {
        "prefix": STATE_DICT_DELIMETER.join(path),
        "folder": "/".join(path),
        "class": node.class_name,
        "version": node.version,
        "config": node.config,
        "keys": list(node.state),
        "tensors": {
            key: {
                "dtype": str(value.dtype).removeprefix("torch."),
                "shape": list(value.shape),
                "nbytes": value.numel() * value.element_size(),
            }
            for key, value in node.state.items()
            if isinstance(value, torch.Tensor)
        },
    }


def _describe_files(root: Path, known: Mapping[Path, str]) -> list[dict[str, Any]]:
    sizes = {path: size for path, size in listing(walk(root)).items() if size is not None}
    sizes.pop(MANIFEST_FILE_NAME, None)
    unknown = [(root / path, size) for path, size in sizes.items() if root / path not in known]
    digests = dict(zip((path for path, _ in unknown), sha256_all(unknown), strict=True))
    return [
        {"path": path, "size": size, "sha256": known.get(root / path) or digests[root / path]}
        for path, size in sizes.items()
    ]


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest.json` (UTF-8, sorted keys, indent 1): the archive's commit marker."""
    path = root / MANIFEST_FILE_NAME
    text = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _torch_pickle(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return pickle_record(archive)


def unsafe_globals(names: Iterable[str]) -> list[str]:
    """The names, sorted, that the allow-list does not admit.

    torch resolves its own storage types (`torch.FloatStorage`) before any unpickler
    sees them, so those are safe too.
    """
    allowed = allowed_globals()
    return sorted(
        name for name in set(names) if name not in allowed and not _is_torch_storage(name)
    )


def _is_torch_storage(qualified_name: str) -> bool:
    module, _, name = qualified_name.rpartition(".")
    if module != "torch" or "Storage" not in name:
        return False
    try:
        torch.storage._get_dtype_from_pickle_storage_type(name)
    except KeyError:
        return False
    return True


def pickle_payload(state: State, original_revision: str | None = None) -> dict[str, Any]:
    """What a protocol 2 pickle-only archive holds: header, state (plain), metadata."""
    return {
        PICKLE_HEADER_KEY: header(original_revision),
        "state": OrderedDict(state),
        "metadata": dict(state._metadata),
    }

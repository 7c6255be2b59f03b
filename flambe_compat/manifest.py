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
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import torch

from .layout import (
    PICKLE_HEADER_KEY,
    STATE_DICT_DELIMETER,
)
from .layout import PROTOCOL_2 as PROTOCOL_2
from .revisions import Revision
from .state import State
from .tree import SaveTreeNode, _traverse_all_nodes
from .unpickle import allowed_globals

FORMAT = "flambe-compat"
REVISION: Revision = "2.0"


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
    tree: SaveTreeNode,
    keep_vars: bool | None,
    files: Mapping[str, tuple[int, str]],
    named_globals: Iterable[str],
    original_revision: str | None = None,
) -> dict[str, Any]:
    """The manifest of a save folder written from `tree` (saved with `keep_vars`), given
    by its writer: every file but the manifest (POSIX path -> size and sha256, as
    written) and the globals its payloads' pickles name (`payload.scan_pickle`).

    Nodes are listed by folder path, so parents come first and the order is stable.
    """
    nodes = [
        manifest_node(path, node)
        for path, node in sorted(_traverse_all_nodes(tree), key=lambda item: item[0])
    ]
    unsafe = unsafe_globals(named_globals)
    return {
        **header(original_revision),
        "keep_vars": bool(keep_vars),
        "directories": sorted(node["prefix"] for node in nodes),
        "nodes": nodes,
        "files": [
            {"path": path, "size": size, "sha256": digest}
            for path, (size, digest) in sorted(files.items())
        ],
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


def manifest_text(manifest: dict[str, Any]) -> str:
    """The text of `manifest.json`, the archive's commit marker: UTF-8 JSON with sorted
    keys, one line per top-level key and one per item of a top-level list (each node,
    each file). Readable, and written by json's C encoder, which `indent` would turn off.

    >>> print(manifest_text({"b": [1, {"y": 2, "x": 1}], "a": {"k": []}}), end="")
    {
     "a": {"k": []},
     "b": [
      1,
      {"x": 1, "y": 2}
     ]
    }
    """

    encode = _ENCODER.encode
    lines = []
    for key, value in sorted(manifest.items()):
        if isinstance(value, list) and value:
            items = ",\n".join(f"  {encode(item)}" for item in value)
            lines.append(f" {encode(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {encode(key)}: {encode(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
"""One encoder for every line (`json.dumps` with options builds one per call)."""


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

"""1.2 -> 1.3: from flambe 0.4.12 every `state.pt` carries `_metadata`."""

from __future__ import annotations

import dataclasses

from flambe_compat.archive import Archive

SOURCE = "1.2"
TARGET = "1.3"


def migrate(archive: Archive) -> Archive:
    """Record the tree's metadata in the payloads: `keep_vars` becomes explicit.

    flambe 0.4.12 started saving each node's `_metadata` (torch's per-module metadata
    merged with the node's flambe metadata) inside its `state.pt`, and the whole tree's
    `_flambe_directories` and `keep_vars` in the root's. Older folders kept node metadata
    in the text files only, which the reader already puts in the tree's nodes, and the
    Component prefixes are the tree's own: the writer of 1.3 records both. What no older
    folder recorded is `keep_vars`: we set flambe's default, `False`, which every
    `get_state()` call in flambe itself used. torch's per-module metadata (`version`) was
    not saved and is not invented.
    """
    keep_vars = False if archive.keep_vars is None else archive.keep_vars
    return dataclasses.replace(archive, keep_vars=keep_vars, revision="1.3")

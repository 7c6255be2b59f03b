"""1.2 -> 1.3: from flambe 0.4.12 every `state.pt` carries `_metadata`."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from flambe_compat.archive import Archive
from flambe_compat.layout import FLAMBE_DIRECTORIES_KEY, KEEP_VARS_KEY
from flambe_compat.state import State

SOURCE = "1.2"
TARGET = "1.3"


def migrate(archive: Archive) -> Archive:
    """Record the tree's metadata in the payloads: `keep_vars` becomes explicit.

    flambe 0.4.12 started saving each node's `_metadata` (torch's per-module metadata
    merged with the node's flambe metadata) inside its `state.pt`, and the whole tree's
    `_flambe_directories` and `keep_vars` in the root's. Older folders kept node metadata
    in the text files only, which the reader already turns into metadata entries. What no
    older folder recorded is `keep_vars`: we set flambe's default, `False`, which every
    `get_state()` call in flambe itself used. torch's per-module metadata (`version`) was
    not saved and is not invented.
    """
    metadata = OrderedDict(archive.state._metadata)
    metadata.setdefault(FLAMBE_DIRECTORIES_KEY, {""})
    metadata.setdefault(KEEP_VARS_KEY, False)
    state = State(archive.state)
    state._metadata = metadata
    return dataclasses.replace(archive, state=state, revision="1.3")

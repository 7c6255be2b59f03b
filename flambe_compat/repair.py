"""Repairs of what flambe's writers got wrong, on a decoded archive's save tree.

flambe 0.4.5 - 0.4.11 (format revisions 1.1 and 1.2) saved a Component held in a
container of another one (`blocks.0`, a `ModuleList` item) with wrong keys: its writer
advanced the start of a key by one part per Component it descended into, not past the
Component's prefix. So `blocks.0/state.pt` holds `0.linear.weight` for `blocks.0.linear.weight`,
and a Component below it gets the folder `blocks.0/0.inner` (not `inner`). flambe's reader
joins folder names and keys: `blocks.0.0.linear.weight`, which its `load()` silently skipped.

`repaired` gives back the keys (and folder names) the objects had when they were saved,
renaming them in the nodes that hold them. It acts only on the folder archives of
revisions 1.1 and 1.2, and only when every folder name and every key has the exact shape
that writer produced (each part it repeated is the part it should have skipped); an
archive that shows anything else is returned unchanged.

>>> from flambe_compat.state import State
>>> from flambe_compat.tree import node_metadata
>>> read = State({"blocks.0.0.linear.weight": 1, "out.bias": 2})
>>> read._metadata = {"_flambe_directories": {"", "blocks.0"},
...     "": node_metadata("Tower"), "blocks.0": node_metadata("Block")}
>>> fixed = repaired(Archive.of_state(read, revision="1.2", layout="folder")).state()
>>> list(fixed), sorted(fixed._metadata["_flambe_directories"])
(['out.bias', 'blocks.0.linear.weight'], ['', 'blocks.0'])
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .archive import Archive
from .layout import STATE_DICT_DELIMETER
from .tree import SaveTreeNode, _traverse_all_nodes

_DEFECTIVE_REVISIONS = ("1.1", "1.2")

Parts = tuple[str, ...]


class _NotTheDefect(Exception):
    """The archive shows something its defective writer could not have written."""


def repaired(archive: Archive) -> Archive:
    """`archive` with the keys its objects had, when its writer saved them wrong."""
    if archive.layout != "folder" or archive.revision not in _DEFECTIVE_REVISIONS:
        return archive
    folders = (name for _, node in _traverse_all_nodes(archive.tree) for name in node.children)
    if all(len(_parts(name)) == 1 for name in folders):
        return archive  # every Component one part below the previous one: nothing was shifted
    try:
        tree = _repaired_node(archive.tree, [], ())
    except _NotTheDefect:
        return archive
    return dataclasses.replace(archive, tree=tree)


def _repaired_node(node: SaveTreeNode, chain: list[Parts], true: Parts) -> SaveTreeNode:
    """The node at the folder names `chain` (as read), whose true prefix is `true`, with
    true keys and its children's true folder names."""
    children = {}
    for name, child in node.children.items():
        child_chain = [*chain, _parts(name)]
        child_true = _true_prefix(child_chain)
        children[_join(child_true[len(true) :])] = _repaired_node(child, child_chain, child_true)
    if len(children) != len(node.children):
        raise _NotTheDefect  # two folders would become one
    # the writer repeated the node's true prefix from the part of its depth in every key
    repeated = true[len(chain) :]
    state: dict[str, Any] = OrderedDict(
        (_unrepeated(key, repeated), value) for key, value in node.state.items()
    )
    metadata = getattr(node.state, "_metadata", None)
    if metadata is not None:
        state._metadata = {  # type: ignore[attr-defined]
            key and _unrepeated(key, repeated): value  # "" is the node's own entry
            for key, value in metadata.items()
        }
        if len(state._metadata) != len(metadata):  # type: ignore[attr-defined]
            raise _NotTheDefect
    if len(state) != len(node.state):
        raise _NotTheDefect  # two keys would become one
    return node._replace(state=state, children=children)


def _parts(key: str) -> Parts:
    return tuple(key.split(STATE_DICT_DELIMETER)) if key else ()


def _join(parts: Sequence[str]) -> str:
    return STATE_DICT_DELIMETER.join(parts)


def _true_prefix(chain: Sequence[Parts]) -> Parts:
    """Undo the writer's folder names: the d-th folder repeats the true prefix from part d."""
    true: Parts = ()
    for depth, name in enumerate(chain):
        repeated = true[depth:]
        if name[: len(repeated)] != repeated or len(name) <= len(repeated):
            raise _NotTheDefect
        true += name[len(repeated) :]
    return true


def _unrepeated(key: str, repeated: Parts) -> str:
    """A key relative to its node (as read) without the part of the prefix it repeats."""
    parts = _parts(key)
    if parts[: len(repeated)] != repeated or len(parts) <= len(repeated):
        raise _NotTheDefect
    return _join(parts[len(repeated) :])

"""Repairs of what flambe's writers got wrong, on a decoded archive.

flambe 0.4.5 - 0.4.11 (format revisions 1.1 and 1.2) saved a Component held in a
container of another one (`blocks.0`, a `ModuleList` item) with wrong keys: its writer
advanced the start of a key by one part per Component it descended into, not past the
Component's prefix. So `blocks.0/state.pt` holds `0.linear.weight` for `blocks.0.linear.weight`,
and a Component below it gets the folder `blocks.0/0.inner` (not `inner`). flambe's reader
joins folder names and keys: `blocks.0.0.linear.weight`, which its `load()` silently skipped.

`repaired` gives back the keys the objects had when they were saved. It acts only on the
folder archives of revisions 1.1 and 1.2, and only when every folder name and every key
has the exact shape that writer produced (each part it repeated is the part it should
have skipped); an archive that shows anything else is returned unchanged.

>>> from flambe_compat.tree import node_metadata
>>> read = State({"blocks.0.0.linear.weight": 1, "out.bias": 2})
>>> read._metadata = {"_flambe_directories": {"", "blocks.0"},
...     "": node_metadata("Tower"), "blocks.0": node_metadata("Block")}
>>> fixed = repaired(Archive(read, revision="1.2", layout="folder")).state
>>> list(fixed), sorted(fixed._metadata["_flambe_directories"])
(['blocks.0.linear.weight', 'out.bias'], ['', 'blocks.0'])
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from .archive import Archive
from .layout import FLAMBE_DIRECTORIES_KEY, STATE_DICT_DELIMETER
from .state import State

_DEFECTIVE_REVISIONS = ("1.1", "1.2")

Parts = tuple[str, ...]


class _NotTheDefect(Exception):
    """The archive shows something its defective writer could not have written."""


def repaired(archive: Archive) -> Archive:
    """`archive` with the keys its objects had, when its writer saved them wrong."""
    if archive.layout != "folder" or archive.revision not in _DEFECTIVE_REVISIONS:
        return archive
    try:
        state = _container_keys_repaired(archive.state)
    except _NotTheDefect:
        return archive
    return archive if state is None else dataclasses.replace(archive, state=state)


def _container_keys_repaired(state: State) -> State | None:
    """The State with true keys; None when no key was shifted."""
    directories = state._metadata.get(FLAMBE_DIRECTORIES_KEY)
    if not isinstance(directories, (set, frozenset, list)) or "" not in directories:
        raise _NotTheDefect
    folders = {_parts(prefix): _folder_chain(_parts(prefix), directories) for prefix in directories}
    if all(len(name) == 1 for chain in folders.values() for name in chain):
        return None  # every Component one part below the previous one: nothing was shifted
    prefixes = {prefix: _true_prefix(chain) for prefix, chain in folders.items()}

    def rename(key: str) -> str:
        parts = _parts(key)
        if parts in prefixes:
            return _join(prefixes[parts])
        return _join(_true_key(parts, folders, prefixes))

    fixed = State((rename(key), value) for key, value in state.items())
    fixed._metadata = OrderedDict(
        (key, {rename(p) for p in directories})
        if key == FLAMBE_DIRECTORIES_KEY
        else (rename(key), value)
        for key, value in state._metadata.items()
    )
    if len(fixed) != len(state) or len(fixed._metadata) != len(state._metadata):
        raise _NotTheDefect  # two keys would become one
    return fixed


def _parts(key: str) -> Parts:
    return tuple(key.split(STATE_DICT_DELIMETER)) if key else ()


def _join(parts: Sequence[str]) -> str:
    return STATE_DICT_DELIMETER.join(parts)


def _folder_chain(prefix: Parts, directories: Iterable[str]) -> list[Parts]:
    """The folder names (as read) from the root to the node at `prefix`."""
    ends = sorted(
        len(_parts(d)) for d in directories if d and _parts(d) == prefix[: len(_parts(d))]
    )
    return [prefix[start:end] for start, end in zip([0, *ends], ends, strict=False)]


def _true_prefix(chain: Sequence[Parts]) -> Parts:
    """Undo the writer's folder names: the d-th folder repeats the true prefix from part d."""
    true: Parts = ()
    for depth, name in enumerate(chain):
        repeated = true[depth:]
        if name[: len(repeated)] != repeated or len(name) <= len(repeated):
            raise _NotTheDefect
        true += name[len(repeated) :]
    return true


def _true_key(key: Parts, folders: dict[Parts, list[Parts]], prefixes: dict[Parts, Parts]) -> Parts:
    """The true key of `key` (as read): the writer repeated its node's prefix from part depth."""
    owner = max((p for p in folders if key[: len(p)] == p and len(key) > len(p)), key=len)
    true = prefixes[owner]
    repeated = true[len(folders[owner]) :]
    relative = key[len(owner) :]
    if relative[: len(repeated)] != repeated or len(relative) <= len(repeated):
        raise _NotTheDefect
    return true + relative[len(repeated) :]

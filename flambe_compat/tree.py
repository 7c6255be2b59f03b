"""The save tree: one `SaveTreeNode` per Component, as the directory format lays it out.

A flat `State` becomes a tree whose nodes hold their own keys relative to the node
(`state_to_tree`), and back (`tree_to_state`). The private helpers keep the names
and signatures of `flambe.compile.serialization`, with one fix: folder names below a
dotted folder are computed correctly (flambe wrote `a/plain.b/b.plain.c` for the
Component at `a.plain.b.plain.c`; we write `a/plain.b/plain.c`, which flambe's
reader maps back to the right prefix).

>>> s = State({"counter.count": 1}); s._metadata = {
...     "_flambe_directories": {"", "counter"}, "keep_vars": False,
...     "": node_metadata("Wrapper"), "counter": node_metadata("Counter")}
>>> tree = state_to_tree(s)
>>> sorted(tree.children), dict(tree.children["counter"].state)
(['counter'], {'count': 1})
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, NamedTuple

from .errors import LoadError
from .layout import (
    FLAMBE_CLASS_KEY,
    FLAMBE_CONFIG_KEY,
    FLAMBE_DIRECTORIES_KEY,
    FLAMBE_SOURCE_KEY,
    FLAMBE_STASH_KEY,
    STATE_DICT_DELIMETER,
    VERSION_KEY,
)
from .state import State


class SaveTreeNode(NamedTuple):
    """Tree representation corresponding to the directory save format."""

    state: dict[str, Any]
    version: str
    class_name: str
    source_code: str
    config: str
    object_stash: dict[str, Any]
    children: dict[str, Any]  # str -> SaveTreeNode; NamedTuple cannot nest its own type


def node_metadata(
    class_name: str, version: str = "0.0.0", source: str = "", config: str = ""
) -> dict[str, Any]:
    """The flambe metadata of one Component, as `Component.get_state` records it."""
    return {
        VERSION_KEY: version,
        FLAMBE_CLASS_KEY: class_name,
        FLAMBE_SOURCE_KEY: source,
        FLAMBE_CONFIG_KEY: config,
    }


def _new_node(node_metadata: Mapping[str, Any]) -> SaveTreeNode:
    state: dict[str, Any] = OrderedDict()
    state._metadata = {}  # type: ignore[attr-defined]
    return SaveTreeNode(
        state=state,
        version=node_metadata[VERSION_KEY],
        class_name=node_metadata[FLAMBE_CLASS_KEY],
        source_code=node_metadata[FLAMBE_SOURCE_KEY],
        config=node_metadata.get(FLAMBE_CONFIG_KEY, ""),
        object_stash=node_metadata.get(FLAMBE_STASH_KEY, {}),
        children={},
    )


def component_folders(prefix: str, directories: Iterable[str]) -> list[str]:
    """The folder names leading to the Component at `prefix`.

    Each folder is the part of the prefix between two Components, so a Component
    reached through plain modules keeps a dotted name.

    >>> component_folders("a.plain.b.plain.c", {"", "a", "a.plain.b", "a.plain.b.plain.c"})
    ['a', 'plain.b', 'plain.c']
    """
    return _folders(prefix, directories, flambe_defect=False)


def flambe_component_folders(prefix: str, directories: Iterable[str]) -> list[str]:
    """The folder names flambe's own writer used for `prefix` (wrong below a dotted folder).

    >>> flambe_component_folders("a.plain.b.plain.c", {"", "a", "a.plain.b", "a.plain.b.plain.c"})
    ['a', 'plain.b', 'b.plain.c']
    """
    return _folders(prefix, directories, flambe_defect=True)


def _folders(prefix: str, directories: Iterable[str], flambe_defect: bool) -> list[str]:
    known = set(directories)
    parts = prefix.split(STATE_DICT_DELIMETER)
    folders, start = [], 0
    for i in range(len(parts)):
        if STATE_DICT_DELIMETER.join(parts[: i + 1]) in known:
            folders.append(STATE_DICT_DELIMETER.join(parts[start : i + 1]))
            # flambe advanced the folder start by one part per Component, not to i + 1
            start = start + 1 if flambe_defect else i + 1
    return folders


def _convert_to_tree(metadata: Mapping[str, Any]) -> SaveTreeNode:
    """An empty save tree with one node per prefix of `_flambe_directories`, children in
    the order of their prefixes (as the reader orders folders)."""
    directories = metadata[FLAMBE_DIRECTORIES_KEY]
    tree = _new_node(metadata[""])
    for prefix in sorted(directories, key=lambda p: (p.count(STATE_DICT_DELIMETER), p)):
        if prefix == "":
            continue
        node, walked = tree, []
        for folder in component_folders(prefix, directories):
            walked.append(folder)
            if folder not in node.children:
                node.children[folder] = _new_node(metadata[STATE_DICT_DELIMETER.join(walked)])
            node = node.children[folder]
    return tree


def _fetch_tree_item(save_tree: SaveTreeNode, key: Sequence[str]) -> tuple[str, SaveTreeNode]:
    """The node holding the dotted key `key` (split into parts) and the key relative to it."""
    current = save_tree
    last_i = 0
    current_key = ""
    for i, _ in enumerate(key):
        current_key = STATE_DICT_DELIMETER.join(key[last_i : i + 1])
        if current_key in current.children:
            current = current.children[current_key]
            last_i = i + 1
            current_key = STATE_DICT_DELIMETER.join(key[last_i : i + 1])
    return current_key, current


def _update_save_tree(save_tree: SaveTreeNode, key: Sequence[str], value: Any) -> None:
    """Put the state entry `key` into the node that owns it."""
    current_key, current = _fetch_tree_item(save_tree, key)
    current.state[current_key] = value


def _update_save_tree_metadata(save_tree: SaveTreeNode, key: Sequence[str], value: Any) -> None:
    """Put the metadata entry `key` into the node that owns it."""
    current_key, current = _fetch_tree_item(save_tree, key)
    current.state._metadata[current_key] = value  # type: ignore[attr-defined]


def _traverse_all_nodes(
    save_tree: SaveTreeNode, path: list[str] | None = None
) -> Iterator[tuple[list[str], SaveTreeNode]]:
    """Every node with its folder path, parents first."""
    if path is None:
        path = []
    yield path, save_tree
    for key, value in save_tree.children.items():
        yield from _traverse_all_nodes(value, [*path, key])


def _extract_prefix(root: str, directory: str) -> str:
    """The state prefix of the node folder `directory` below the save folder `root`.

    >>> _extract_prefix("/m", "/m/model/inner")
    'model.inner'
    """
    if directory.startswith(root):
        return directory[len(root) :].lstrip(os.sep).replace(os.sep, STATE_DICT_DELIMETER)
    raise LoadError(f"{directory}: not inside the save folder {root}")


def _prefix_keys(state: MutableMapping[str, Any], prefix: str) -> MutableMapping[str, Any]:
    """Prepend `prefix` to every key of `state`, in place."""
    for key in list(state.keys()):
        state[prefix + key] = state.pop(key)
    return state


def traverse(nested: Mapping[str, Any], path: list[str] | None = None) -> Iterator[Any]:
    """Iterate over a nested mapping yielding `(path, key, value)` for every leaf.

    >>> list(traverse({"a": {"b": 1}, "c": 2}))
    [(['a'], 'b', 1), ([], 'c', 2)]
    """
    if path is None:
        path = []
    for key, value in nested.items():
        if isinstance(value, Mapping):
            yield from traverse(value, [*path, key])
        else:
            yield path, key, value


def state_to_tree(state: State) -> SaveTreeNode:
    """Split a flat `State` into its save tree (keys and metadata relative to each node)."""
    save_tree = _convert_to_tree(state._metadata)
    for key, value in state.items():
        _update_save_tree(save_tree, key.split(STATE_DICT_DELIMETER), value)
    for key, value in state._metadata.items():
        _update_save_tree_metadata(save_tree, key.split(STATE_DICT_DELIMETER), value)
    return save_tree


def tree_to_state(save_tree: SaveTreeNode, directories: Iterable[str] | None = None) -> State:
    """Flatten a save tree back into a `State`.

    Each node's `state._metadata` entries (torch's per-module metadata, relative to the
    node) are prefixed like its keys; the node's own flambe metadata is merged into the
    entry of its prefix. `directories` maps folder paths to prefixes when they are known
    (archives from flambe 0.4.12 on record them); otherwise folder paths give them.
    """
    known = set(directories) if directories is not None else None
    state = State()
    state._metadata = OrderedDict()
    found: set[str] = set()
    for path, node in _traverse_all_nodes(save_tree):
        prefix = _node_prefix(path, known)
        dotted = prefix + STATE_DICT_DELIMETER if prefix else ""
        for key, value in node.state.items():
            state[dotted + key] = value
        for key, value in getattr(node.state, "_metadata", {}).items():
            target = prefix if key == "" else dotted + key
            state._metadata[target] = value
        entry = dict(state._metadata.get(prefix, {}))
        entry.update(node_metadata(node.class_name, node.version, node.source_code, node.config))
        if node.object_stash:
            entry[FLAMBE_STASH_KEY] = node.object_stash
        state._metadata[prefix] = entry
        found.add(prefix)
    state._metadata[FLAMBE_DIRECTORIES_KEY] = found
    return state


def _node_prefix(path: Sequence[str], directories: set[str] | None) -> str:
    """The prefix of the node at folder `path`, undoing flambe's naming defect if needed."""
    plain = STATE_DICT_DELIMETER.join(path)
    if directories is None or plain in directories:
        return plain
    for prefix in directories:
        if flambe_component_folders(prefix, directories) == list(path):
            return prefix
    return plain

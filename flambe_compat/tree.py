"""The save tree: one `SaveTreeNode` per Component, as the directory format lays it out.

A flat `State` becomes a tree whose nodes hold their own keys relative to the node
(`state_to_tree`), and back (`tree_to_state`). The nodes hold what is theirs; what the
root's `_metadata` records about the whole tree (`tree_metadata`: the Component
prefixes, `keep_vars`) is not kept in the tree but given to `tree_to_state` and the
writers. The private helpers keep the names and signatures of
`flambe.compile.serialization`, with one fix: folder names below a dotted folder are
computed correctly (flambe wrote `a/plain.b/b.plain.c` for the Component at
`a.plain.b.plain.c`; we write `a/plain.b/plain.c`, which flambe's reader maps back to
the right prefix, and `renamed_folders` renames a tree read from flambe's folders).

>>> s = State({"counter.count": 1}); s._metadata = {
...     "_flambe_directories": {"", "counter"}, "keep_vars": False,
...     "": node_metadata("Wrapper"), "counter": node_metadata("Counter")}
>>> tree = state_to_tree(s)
>>> sorted(tree.children), dict(tree.children["counter"].state), sorted(prefixes(tree))
(['counter'], {'count': 1}, ['', 'counter'])
>>> back = tree_to_state(tree, keep_vars=False)
>>> dict(back), back._metadata["keep_vars"], back._metadata["counter"]["_flambe_class"]
({'counter.count': 1}, False, 'Counter')
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
    KEEP_VARS_KEY,
    STATE_DICT_DELIMETER,
    VERSION_KEY,
)
from .state import State

TREE_METADATA_KEYS = (FLAMBE_DIRECTORIES_KEY, KEEP_VARS_KEY)
"""The entries of a root `_metadata` about the whole tree (see `tree_metadata`)."""


class SaveTreeNode(NamedTuple):
    """Tree representation corresponding to the directory save format.

    `state._metadata`, when present, holds torch's per-module metadata relative to the
    node (the node's own under `""`); the node's fields are its flambe metadata.
    """

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
    # a set given is used as it is: callers ask for each of hundreds of prefixes
    known = directories if isinstance(directories, (set, frozenset)) else set(directories)
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


class FlatOrder(NamedTuple):
    """The order of a flat `State`'s keys and of its `_metadata`'s, which a save tree
    loses: a pickle of a `State` keeps it (see `tree_to_state`)."""

    keys: tuple[str, ...]
    metadata: tuple[str, ...]

    @classmethod
    def of(cls, state: State) -> FlatOrder:
        return cls(tuple(state), tuple(state._metadata))


def state_to_tree(state: State) -> SaveTreeNode:
    """Split a flat `State` into its save tree (keys and metadata relative to each node).

    The entries about the whole tree (`TREE_METADATA_KEYS`) are left out. `ValueError`
    for a state without flambe's metadata (read archives are checked by their schema).
    """
    metadata = getattr(state, "_metadata", None)
    if not isinstance(metadata, Mapping):
        raise _not_flambe_metadata("is not flambe's")
    try:
        save_tree = _convert_to_tree(metadata)
    except KeyError as error:
        raise _not_flambe_metadata(f"lacks {error}") from None
    except (TypeError, AttributeError):
        raise _not_flambe_metadata("is not flambe's") from None
    for key, value in state.items():
        _update_save_tree(save_tree, key.split(STATE_DICT_DELIMETER), value)
    for key, value in metadata.items():
        if key not in TREE_METADATA_KEYS:
            _update_save_tree_metadata(save_tree, key.split(STATE_DICT_DELIMETER), value)
    return save_tree


def _not_flambe_metadata(why: str) -> ValueError:
    return ValueError(
        f"not a flambe State: its _metadata {why} (save the State that a Component's "
        "get_state() returns)"
    )


def tree_to_state(
    save_tree: SaveTreeNode, keep_vars: bool | None = None, order: FlatOrder | None = None
) -> State:
    """Flatten a save tree back into a `State`, its `_metadata` led by `tree_metadata`.

    Each node's `payload_metadata` entries are prefixed like its keys (its own under its
    prefix). With `order`, the keys and metadata it lists come first, in its order.
    """
    state = State()
    state._metadata = OrderedDict(tree_metadata(save_tree, keep_vars))
    for path, node in _traverse_all_nodes(save_tree):
        prefix = STATE_DICT_DELIMETER.join(path)
        dotted = prefix + STATE_DICT_DELIMETER if prefix else ""
        for key, value in node.state.items():
            state[dotted + key] = value
        for key, value in payload_metadata(node).items():
            state._metadata[prefix if key == "" else dotted + key] = value
    if order is None:
        return state
    ordered = State(_in_order(state, order.keys))
    ordered._metadata = OrderedDict(_in_order(state._metadata, order.metadata))
    return ordered


def _in_order(items: Mapping[str, Any], order: Sequence[str]) -> list[tuple[str, Any]]:
    """The items listed in `order` in its order, then the others as they come."""
    rank = {key: i for i, key in enumerate(order)}
    return sorted(items.items(), key=lambda item: rank.get(item[0], len(rank)))


def prefixes(save_tree: SaveTreeNode) -> set[str]:
    """The Component prefixes of the tree (`_flambe_directories`)."""
    return {STATE_DICT_DELIMETER.join(path) for path, _ in _traverse_all_nodes(save_tree)}


def tree_metadata(save_tree: SaveTreeNode, keep_vars: bool | None) -> dict[str, Any]:
    """What the root's `_metadata` records about the whole tree from flambe 0.4.12 on:
    the Component prefixes and, when known, the `keep_vars` of the `get_state()` call."""
    metadata: dict[str, Any] = {FLAMBE_DIRECTORIES_KEY: prefixes(save_tree)}
    if keep_vars is not None:
        metadata[KEEP_VARS_KEY] = keep_vars
    return metadata


def payload_metadata(node: SaveTreeNode) -> dict[str, Any]:
    """The node's `_metadata` as its `state.pt` records it (revision 1.3 on): torch's
    entries, the one under `""` merged with the node's flambe metadata."""
    metadata = dict(getattr(node.state, "_metadata", {}))
    entry = dict(metadata.get("", {}))
    entry.update(node_metadata(node.class_name, node.version, node.source_code, node.config))
    if node.object_stash:
        entry[FLAMBE_STASH_KEY] = node.object_stash
    metadata[""] = entry
    return metadata


def node_payload(node: SaveTreeNode, about_tree: Mapping[str, Any]) -> dict[str, Any]:
    """The node's `state.pt` from revision 1.3 on: its state, with a `_metadata` of
    `about_tree` (the root's `tree_metadata`; empty for other nodes) and `payload_metadata`."""
    payload: dict[str, Any] = OrderedDict(node.state)
    payload._metadata = {**about_tree, **payload_metadata(node)}  # type: ignore[attr-defined]
    return payload


def renamed_folders(save_tree: SaveTreeNode, directories: Iterable[str]) -> SaveTreeNode:
    """A tree read from folders, its folders named as `component_folders` names them.

    `directories` (recorded from flambe 0.4.12 on) tells which prefix a folder path
    written by flambe's writer stands for; then the folder paths join into the prefixes.
    """
    known = set(directories)

    def renamed(node: SaveTreeNode, path: list[str]) -> SaveTreeNode:
        children = {}
        for name, child in node.children.items():
            prefix = _node_prefix([*path, name], known)
            folder = component_folders(prefix, known)[-1] if prefix in known else name
            children[folder] = renamed(child, [*path, name])
        return node._replace(children=children)

    return renamed(save_tree, [])


def _node_prefix(path: Sequence[str], directories: set[str]) -> str:
    """The prefix of the node at folder `path`, undoing flambe's naming defect if needed."""
    plain = STATE_DICT_DELIMETER.join(path)
    if plain in directories:
        return plain
    for prefix in directories:
        if flambe_component_folders(prefix, directories) == list(path):
            return prefix
    return plain

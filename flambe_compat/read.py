"""Decoding protocol 1 archives into a save tree, then a `State`.

Every payload goes through `unpickle` (the allow-list unless the caller trusts the
archive); every failure becomes a `LoadError` naming the file.

>>> from flambe_compat.unpickle import Trust
>>> with opened("fixtures/flambe-corpus/0.4.18-zip/counter-dir") as archive:
...     state = read_state(archive, Trust())
>>> dict(state)
{'label': 'steps', 'count': 5}
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from packaging.version import InvalidVersion, Version

from .config import check_config
from .container import Opened, opened
from .detect import file_payload_format
from .errors import LoadError
from .layout import (
    CONFIG_FILE_NAME,
    FLAMBE_DIRECTORIES_KEY,
    NODE_FILES,
    PROTOCOL_1,
    PROTOCOL_VERSION_FILE_NAME,
    SOURCE_FILE_NAME,
    STASH_FILE_NAME,
    STATE_FILE_NAME,
    VERSION_FILE_NAME,
)
from .state import State
from .tree import SaveTreeNode, tree_to_state
from .unpickle import Trust, UnsafeGlobalError, torch_load, unpickle

__all__ = ["decode_payload", "opened", "read_state", "read_tree"]

T = TypeVar("T")
MAX_TEXT_BYTES = 64 << 20


def read_state(
    archive: Opened, trust: Trust, pickle_module: Any = pickle, **load_args: Any
) -> State:
    """The `State` held by an opened protocol 1 archive (folder or pickle)."""
    if archive.is_directory:
        tree, directories = read_tree(archive.payload, trust, pickle_module, **load_args)
        return tree_to_state(tree, directories)
    return read_pickle(archive.payload, trust, pickle_module, **load_args)


def read_pickle(path: Path, trust: Trust, pickle_module: Any = pickle, **load_args: Any) -> State:
    """A pickle-only archive: one pickle of the whole `State`."""

    def load() -> Any:
        with path.open("rb") as file:
            return unpickle(file, trust, pickle_module, **load_args)

    value = decode_payload(path, load)
    if not isinstance(value, Mapping) or not isinstance(getattr(value, "_metadata", None), dict):
        raise LoadError(f"{path}: the pickle does not hold a flambe State")
    if isinstance(value, State):
        return value
    state = State(value)
    state._metadata = value._metadata  # type: ignore[attr-defined]
    return state


def read_tree(
    root: Path, trust: Trust, pickle_module: Any = pickle, **load_args: Any
) -> tuple[SaveTreeNode, set[str] | None]:
    """The save tree of a save folder, and the `_flambe_directories` its root records."""
    _refuse_links(root)
    tree = _read_node(root, trust, pickle_module, load_args)
    recorded = getattr(tree.state, "_metadata", {}).get(FLAMBE_DIRECTORIES_KEY)
    return tree, set(recorded) if isinstance(recorded, (set, frozenset, list)) else None


def _refuse_links(root: Path) -> None:
    for folder, subfolders, files in os.walk(root):
        for name in subfolders + files:
            if os.path.islink(os.path.join(folder, name)):
                raise LoadError(f"{os.path.join(folder, name)}: symbolic links are refused")
    if not any(root.iterdir()):
        raise LoadError(f"{root}: the save folder is empty")


def _read_node(
    folder: Path, trust: Trust, pickle_module: Any, load_args: dict[str, Any]
) -> SaveTreeNode:
    for name in NODE_FILES:
        if not (folder / name).is_file():
            raise LoadError(
                f"{folder / name}: missing (every node folder has {', '.join(NODE_FILES)})"
            )
    protocol = read_text(folder / PROTOCOL_VERSION_FILE_NAME).strip()
    if protocol != str(PROTOCOL_1):
        raise LoadError(
            f"{folder / PROTOCOL_VERSION_FILE_NAME}: protocol {protocol!r} is not the "
            f"protocol {PROTOCOL_1} this folder layout uses"
        )
    class_name, version = parse_version_file(folder / VERSION_FILE_NAME)
    config = read_text(folder / CONFIG_FILE_NAME)
    try:
        check_config(config)
    except ValueError as error:
        raise LoadError(f"{folder / CONFIG_FILE_NAME}: {error}") from None
    state = read_torch_or_pickle(folder / STATE_FILE_NAME, trust, pickle_module, load_args)
    stash = read_torch_or_pickle(folder / STASH_FILE_NAME, trust, pickle_module, load_args)
    if not isinstance(state, dict):
        raise LoadError(
            f"{folder / STATE_FILE_NAME}: holds a {type(state).__name__}, not a state dict"
        )
    if not isinstance(stash, dict):
        raise LoadError(f"{folder / STASH_FILE_NAME}: holds a {type(stash).__name__}, not a dict")
    children = {
        child.name: _read_node(child, trust, pickle_module, load_args)
        for child in sorted(folder.iterdir())
        if child.is_dir()
    }
    return SaveTreeNode(
        state=state,
        version=version,
        class_name=class_name,
        source_code=read_text(folder / SOURCE_FILE_NAME),
        config=config,
        object_stash=stash,
        children=children,
    )


def read_torch_or_pickle(
    path: Path, trust: Trust, pickle_module: Any, load_args: dict[str, Any]
) -> Any:
    """A `torch.save` file in either format, or (0.4.0-0.4.4 stashes) a bare pickle."""
    kind = file_payload_format(path)
    if kind in ("zip", "legacy"):
        return decode_payload(path, lambda: torch_load(path, trust, pickle_module, **load_args))
    if kind == "pickle":

        def load() -> Any:
            with path.open("rb") as file:
                return unpickle(file, trust, pickle_module, **load_args)

        return decode_payload(path, load)
    raise LoadError(f"{path}: neither a torch file (zip or legacy) nor a pickle")


def decode_payload(path: Path, load: Callable[[], T]) -> T:
    """Run `load`, turning whatever a bad payload raises into a `LoadError` naming `path`."""
    try:
        return load()
    except LoadError:
        raise
    except UnsafeGlobalError as error:
        raise LoadError(f"{path}: {error}") from None
    except (Exception, RecursionError, MemoryError) as error:
        message = " ".join(str(error).split())[:300]
        raise LoadError(f"{path}: cannot be decoded ({type(error).__name__}: {message})") from None


def read_text(path: Path) -> str:
    """A small UTF-8 text file of a node folder."""
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            raise LoadError(f"{path}: larger than {MAX_TEXT_BYTES} bytes")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise LoadError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise LoadError(f"{path}: cannot be read ({error.strerror})") from None


def parse_version_file(path: Path) -> tuple[str, str]:
    """`ClassName:version` from `version.txt`."""
    text = read_text(path)
    parts = text.split(":")
    if len(parts) != 2 or not parts[0].strip():
        raise LoadError(f"{path}: expected 'ClassName:version', found {text[:80]!r}")
    class_name, version = parts
    try:
        Version(version)
    except InvalidVersion:
        raise LoadError(f"{path}: {version[:80]!r} is not a version") from None
    return class_name, version

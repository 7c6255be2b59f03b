"""Decoding a validated protocol 1 archive into a save tree, then a `State`.

Validation (`flambe_compat.validate.check`) has already judged the archive's structure;
this module only decodes. Every payload goes through `unpickle` (the allow-list unless
the caller trusts the archive); a payload that still fails becomes a `LoadError` naming
the file.

>>> from flambe_compat.container import opened
>>> from flambe_compat.unpickle import Trust
>>> with opened("fixtures/flambe-corpus/0.4.18-zip/counter-dir") as archive:
...     state = read_state(archive, Trust())
>>> dict(state)
{'label': 'steps', 'count': 5}
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .archive import Archive
from .container import Opened
from .detect import archive_folders, file_payload_format
from .errors import LoadError
from .layout import (
    CONFIG_FILE_NAME,
    FLAMBE_DIRECTORIES_KEY,
    REQUIREMENTS_FILE_NAME,
    SOURCE_FILE_NAME,
    STASH_FILE_NAME,
    STATE_FILE_NAME,
    VERSION_FILE_NAME,
)
from .manifest import PROTOCOL_2, state_from_payload
from .repair import repaired
from .state import State
from .tree import SaveTreeNode, tree_to_state
from .unpickle import Trust, UnsafeGlobalError, torch_load, unpickle
from .validate import Report

T = TypeVar("T")


def read_archive(
    archive: Opened, report: Report, trust: Trust, pickle_module: Any = pickle, **load_args: Any
) -> Archive:
    """The decoded `Archive` of an opened archive that `check` found valid (`report`).

    Protocol 2 payloads are memory-mapped (`torch.load(mmap=True)`): tensor bytes are
    read when used, not up front. Keys flambe 0.4.5 - 0.4.11 saved wrong are given back
    as the objects had them (`flambe_compat.repair`).
    """
    if report.revision is None or report.layout is None:
        raise LoadError(f"{archive.source}: no revision was detected")
    original = None
    if report.protocol == PROTOCOL_2:
        load_args = {**load_args, "mmap": True}
        original = _original_revision(report)
    requirements = archive.payload / REQUIREMENTS_FILE_NAME
    return repaired(
        Archive(
            state=read_state(archive, trust, pickle_module, report.plain, **load_args),
            revision=report.revision,
            layout=report.layout,
            requirements=_read_text(requirements) if requirements.is_file() else None,
            original_revision=original,
        )
    )


def _original_revision(report: Report) -> Any:
    document = report.document or {}
    header = document.get("manifest") or (document.get("state") or {}).get("header") or {}
    return header.get("original_revision")


def read_state(
    archive: Opened,
    trust: Trust,
    pickle_module: Any = pickle,
    plain: Mapping[Path, Any] | None = None,
    **load_args: Any,
) -> State:
    """The `State` held by an opened, validated archive (folder or pickle)."""
    if archive.is_directory:
        tree, directories = read_tree(archive.payload, trust, pickle_module, plain, **load_args)
        return tree_to_state(tree, directories)
    return read_pickle(archive.payload, trust, pickle_module, **load_args)


def read_pickle(path: Path, trust: Trust, pickle_module: Any = pickle, **load_args: Any) -> State:
    """A pickle-only archive: flambe's pickle of the whole `State`, or our protocol 2 file."""
    value = read_payload(path, trust, pickle_module, load_args)
    if file_payload_format(path) == "zip":
        return state_from_payload(value, path)
    if not isinstance(value, Mapping) or not isinstance(getattr(value, "_metadata", None), dict):
        raise LoadError(f"{path}: the pickle does not hold a flambe State")
    if isinstance(value, State):
        return value
    state = State(value)
    state._metadata = value._metadata  # type: ignore[attr-defined]
    return state


def read_tree(
    root: Path,
    trust: Trust,
    pickle_module: Any = pickle,
    plain: Mapping[Path, Any] | None = None,
    **load_args: Any,
) -> tuple[SaveTreeNode, set[str] | None]:
    """The save tree of a save folder, and the `_flambe_directories` its root records.

    `plain` holds payloads validation already decoded completely (see `describe`).
    """
    children: dict[Path, dict[str, SaveTreeNode]] = {}
    for folder in reversed(archive_folders(root)):  # children before their parents
        node = _read_node(
            folder, children.pop(folder, {}), trust, pickle_module, plain or {}, load_args
        )
        children.setdefault(folder.parent, {})[folder.name] = node
    tree = children[root.parent][root.name]
    recorded = getattr(tree.state, "_metadata", {}).get(FLAMBE_DIRECTORIES_KEY)
    return tree, set(recorded) if isinstance(recorded, (set, frozenset, list)) else None


def _read_node(
    folder: Path,
    children: dict[str, SaveTreeNode],
    trust: Trust,
    pickle_module: Any,
    plain: Mapping[Path, Any],
    load_args: dict[str, Any],
) -> SaveTreeNode:
    state, stash = (
        plain[path] if path in plain else read_payload(path, trust, pickle_module, load_args)
        for path in (folder / STATE_FILE_NAME, folder / STASH_FILE_NAME)
    )
    if not isinstance(state, dict) or not isinstance(stash, dict):
        raise LoadError(f"{folder}: state.pt and stash.pkl must each hold a dict")
    class_name, version = _read_text(folder / VERSION_FILE_NAME).split(":")
    return SaveTreeNode(
        state=state,
        version=version,
        class_name=class_name,
        source_code=_read_text(folder / SOURCE_FILE_NAME),
        config=_read_text(folder / CONFIG_FILE_NAME),
        object_stash=stash,
        children=dict(sorted(children.items())),
    )


def read_payload(path: Path, trust: Trust, pickle_module: Any, load_args: dict[str, Any]) -> Any:
    """A `torch.save` file in either format, or (0.4.0-0.4.4 stashes) a bare pickle."""
    if file_payload_format(path) == "pickle":

        def load() -> Any:
            with path.open("rb") as file:
                return unpickle(file, trust, pickle_module, **load_args)

        return decode_payload(path, load)
    return decode_payload(path, lambda: torch_load(path, trust, pickle_module, **load_args))


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


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeError) as error:
        raise LoadError(f"{path}: cannot be read ({error})") from None

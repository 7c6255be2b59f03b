"""Writing protocol 1 archives, as flambe 0.4.18 writes and reads them (revision 1.4).

The four modes of `save_state_to_file`: a folder mirroring the Components, that folder
in a tar.gz, one pickle of the `State`, or that pickle in a tar.gz. Differences from
flambe, none visible to its readers: folder names below a dotted folder are right,
`requirements.txt` comes from `importlib.metadata` instead of `pip freeze`, the archive
is published atomically, and gzip runs at level 6 instead of 9.

>>> import tempfile, pathlib
>>> from flambe_compat.tree import node_metadata
>>> s = State({"count": 1}); s._metadata = {"_flambe_directories": {""}, "keep_vars": False,
...                                        "": node_metadata("Counter")}
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m"
>>> write_protocol1(s, path, compress=True)
PosixPath('.../m.tar.gz')
"""

from __future__ import annotations

import functools
import importlib.metadata
import pickle
import tarfile
from pathlib import Path
from typing import IO, Any

import dill
import torch

from .layout import (
    COMPRESSED_SUFFIX,
    CONFIG_FILE_NAME,
    DEFAULT_PROTOCOL,
    PICKLE_SUFFIX,
    PROTOCOL_1,
    PROTOCOL_VERSION_FILE_NAME,
    REQUIREMENTS_FILE_NAME,
    SOURCE_FILE_NAME,
    STASH_FILE_NAME,
    STATE_FILE_NAME,
    VERSION_FILE_NAME,
)
from .publish import check_target, publish, staging
from .state import State
from .tree import SaveTreeNode, _traverse_all_nodes, state_to_tree
from .unpickle import LEGACY_STATE

GZIP_LEVEL = 6


def archive_path(path: str | Path, compress: bool, pickle_only: bool) -> Path:
    """Where flambe puts a save of `path`: `.pkl` for pickles, then `.tar.gz` if compressed.

    >>> archive_path("models/m/", True, True)
    PosixPath('models/m.pkl.tar.gz')
    """
    name = str(path).rstrip("/")
    return Path(
        name + (PICKLE_SUFFIX if pickle_only else "") + (COMPRESSED_SUFFIX if compress else "")
    )


def write_protocol1(
    state: State,
    path: str | Path,
    compress: bool = False,
    pickle_only: bool = False,
    overwrite: bool = False,
    pickle_module: Any = dill,
    pickle_protocol: int = DEFAULT_PROTOCOL,
) -> Path:
    """Write `state` as flambe 0.4.18 would; returns the archive's path."""
    target = archive_path(path, compress, pickle_only)
    check_target(target, overwrite)
    inner_name = archive_path(path, False, pickle_only).name
    with staging(target) as scratch:
        inner = scratch / inner_name
        if pickle_only:
            with inner.open("wb") as file:
                dump_legacy_pickle(state, file, pickle_module, pickle_protocol)
        else:
            write_tree(state_to_tree(state), inner, pickle_module, pickle_protocol)
            (inner / REQUIREMENTS_FILE_NAME).write_text(requirements(), encoding="utf-8")
        built = inner
        if compress:
            built = scratch / target.name
            with tarfile.open(built, mode="w:gz", compresslevel=GZIP_LEVEL) as tar:
                tar.add(inner, arcname=inner_name)
        publish(built, target, overwrite)
    return target


def write_tree(
    save_tree: SaveTreeNode, root: Path, pickle_module: Any, pickle_protocol: int
) -> None:
    """One folder per node with flambe's six files."""
    for node_path, node in _traverse_all_nodes(save_tree):
        folder = root.joinpath(*node_path)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(node.state, folder / STATE_FILE_NAME, pickle_module, pickle_protocol)
        _write_text(folder / VERSION_FILE_NAME, f"{node.class_name}:{node.version}")
        _write_text(folder / SOURCE_FILE_NAME, node.source_code)
        _write_text(folder / CONFIG_FILE_NAME, node.config)
        _write_text(folder / PROTOCOL_VERSION_FILE_NAME, str(PROTOCOL_1))
        torch.save(node.object_stash, folder / STASH_FILE_NAME, pickle_module, pickle_protocol)


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write(text)


@functools.cache
def requirements() -> str:
    """The installed distributions as `pip freeze` lists them (`name==version`, sorted)."""
    pins: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            pins.setdefault(name.lower(), f"{name}=={distribution.version}")
    return "\n".join(pins[key] for key in sorted(pins))


def dump_legacy_pickle(
    state: State, file: IO[bytes], pickle_module: Any = dill, protocol: int = DEFAULT_PROTOCOL
) -> None:
    """Pickle `state` so that it names `flambe.compile.serialization.State`, as flambe's do."""
    _legacy_pickler_class(pickle_module)(file, protocol=protocol).dump(state)


@functools.cache
def _legacy_pickler_class(pickle_module: Any) -> type[pickle._Pickler]:
    base = pickle_module.Pickler
    if not issubclass(base, pickle._Pickler):  # the C pickler cannot rename a global
        base = pickle._Pickler
    module, name = LEGACY_STATE

    class LegacyStatePickler(base):  # type: ignore[valid-type,misc]
        def save(self, obj: Any, save_persistent_id: bool = True) -> None:
            if obj is not State:
                super().save(obj, save_persistent_id)
            elif id(obj) in self.memo:
                self.write(self.get(self.memo[id(obj)][0]))
            else:
                if self.proto >= 4:
                    self.save(module)
                    self.save(name)
                    self.write(pickle.STACK_GLOBAL)
                else:
                    self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
                self.memoize(obj)

    return LegacyStatePickler

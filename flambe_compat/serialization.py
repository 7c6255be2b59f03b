"""The API of `flambe.compile.serialization`, kept name for name on current PyTorch.

Code written for flambe keeps working by changing one import:

>>> from flambe_compat.serialization import load_state_from_file
>>> state = load_state_from_file("fixtures/flambe-corpus/0.4.3-legacy/counter-dir")
>>> dict(state), sorted(state._metadata["_flambe_directories"])
({'count': 5, 'label': 'steps'}, [''])

Differences from flambe, all on the side of safety: payloads are unpickled through an
allow-list unless `trusted=True` (see `flambe_compat.unpickle`), tarballs are unpacked
with checked member names, every bad archive raises `LoadError`, and saves are atomic.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import dill

from .class_migrations import ClassMigrations
from .class_migrations import class_migrations as default_class_migrations
from .errors import LoadError
from .layout import DEFAULT_PROTOCOL, PROTOCOL_1, PROTOCOL_2
from .pipeline import load as load_archive
from .state import State
from .store import fetched, staged
from .tree import (
    SaveTreeNode,
    _convert_to_tree,
    _extract_prefix,
    _fetch_tree_item,
    _prefix_keys,
    _traverse_all_nodes,
    _update_save_tree,
    _update_save_tree_metadata,
    traverse,
)
from .unpickle import Trust

if TYPE_CHECKING:
    from .registry import Registry

__all__ = [
    "LoadError",
    "SaveTreeNode",
    "State",
    "_convert_to_tree",
    "_extract_prefix",
    "_fetch_tree_item",
    "_prefix_keys",
    "_traverse_all_nodes",
    "_update_save_tree",
    "_update_save_tree_metadata",
    "load",
    "load_state_from_file",
    "save",
    "save_state_to_file",
    "traverse",
]

PathLike = str | os.PathLike[str]


def save_state_to_file(
    state: State,
    path: PathLike,
    compress: bool = False,
    pickle_only: bool = False,
    overwrite: bool = False,
    pickle_module: Any = dill,
    pickle_protocol: int = DEFAULT_PROTOCOL,
    *,
    protocol: int = PROTOCOL_2,
    atomic: bool = True,
) -> None:
    """Save `state` to `path` (a local path or a URL: see `flambe_compat.store`).

    By default a folder mirroring the object hierarchy; `compress` tars and gzips it
    into `PATH.tar.gz`; `pickle_only` writes one pickle, `PATH.pkl` (`PATH.pkl.tar.gz`
    with `compress`). An existing file or non-empty folder at the archive's path raises
    `ValueError` unless `overwrite=True`; the archive appears there complete or not at all.
    So does a state without flambe's `_metadata` (a Component's `get_state()` records it).

    `protocol=2` (the default) writes flambe_compat's protocol 2: a `manifest.json` with
    checksums, payloads loadable with `torch.load(weights_only=True)`; its payloads always
    use the standard pickle. `protocol=1` writes what flambe 0.4.18 reads, pickling with
    `pickle_module` and `pickle_protocol` (default 2) as flambe did.

    To a URL, the archive is built locally and uploaded, `manifest.json` last. Object
    stores cannot rename atomically, so a protocol 1 folder (which has no manifest to
    upload last) is refused unless `atomic=False`; single-file archives go up whole.
    """
    from .write import write_protocol1, write_protocol2  # torch: imported by saves only

    if protocol not in (PROTOCOL_1, PROTOCOL_2):
        raise ValueError(f"protocol must be 1 or 2, not {protocol!r}")
    with staged(path, overwrite=overwrite, atomic=atomic) as target:
        if protocol == PROTOCOL_1:
            write_protocol1(
                state, target.path, compress, pickle_only, overwrite, pickle_module, pickle_protocol
            )
        else:
            write_protocol2(state, target.path, compress, pickle_only, overwrite)


def save(
    obj: Any,
    path: PathLike,
    compress: bool = False,
    pickle_only: bool = False,
    overwrite: bool = False,
    pickle_module: Any = dill,
    pickle_protocol: int = DEFAULT_PROTOCOL,
    *,
    protocol: int = PROTOCOL_2,
    atomic: bool = True,
) -> None:
    """Save any object with a `get_state()` method: `save_state_to_file(obj.get_state(), ...)`."""
    save_state_to_file(
        obj.get_state(),
        path,
        compress,
        pickle_only,
        overwrite,
        pickle_module,
        pickle_protocol,
        protocol=protocol,
        atomic=atomic,
    )


def load_state_from_file(
    path: PathLike,
    map_location: Any = None,
    pickle_module: Any = dill,
    *,
    allow_globals: Iterable[str | Any] = (),
    trusted: bool = False,
    strict: bool = False,
    verify: bool = False,
    class_versions: Mapping[str, str] | None = None,
    class_migrations: ClassMigrations | None = None,
    **pickle_load_args: Any,
) -> State:
    """Load the `State` saved at `path`: a folder, a pickle, or either one in a tar.gz;
    a local path or a URL (`s3://`, `gs://`, `az://`, `http(s)://`, `hf://`, `memory://`:
    see `flambe_compat.store`).

    The format and revision are inferred; older revisions are brought to the latest in
    memory, so the State equals what loading the upgraded archive gives.
    `map_location` moves tensors as in `torch.load`.

    Payloads are unpickled through an allow-list of tensors and plain data;
    `allow_globals` adds names (`"module.Class"` or the objects), and `trusted=True`
    unpickles with `pickle_module` as flambe did: only for archives you trust.
    The archive is validated first (`flambe_compat.validate`): any problem raises
    `LoadError` listing every problem with its file; `strict=True` also refuses what
    strict validation flags, and `verify=True` hashes every file of a protocol 2 archive
    (by default files over 16 MiB are only size-checked).

    `class_versions` (class name -> version) brings those Components' states to the
    given versions with the registered class migrations (`class_migrations`, by default
    those registered with `flambe_compat.register_class_migration`).
    """
    with fetched(path) as local:
        archive = load_archive(
            local,
            trust=Trust.of(allow_globals, trusted),
            strict=strict,
            verify=verify,
            pickle_module=pickle_module,
            map_location=map_location,
            **pickle_load_args,
        )
    if class_versions:
        migrations = class_migrations or default_class_migrations
        archive = dataclasses.replace(
            archive, tree=migrations.apply_tree(archive.tree, class_versions)
        )
    return archive.state()


def load(
    path: PathLike,
    map_location: Any = None,
    auto_install: bool = False,
    pickle_module: Any = dill,
    *,
    allow_globals: Iterable[str | Any] = (),
    trusted: bool = False,
    strict: bool = False,
    verify: bool = False,
    class_versions: Mapping[str, str] | None = None,
    class_migrations: ClassMigrations | None = None,
    registry: Registry | None = None,
    extensions: Iterable[str] = (),
    **pickle_load_args: Any,
) -> Any:
    """Load the object saved at `path`: its root config rebuilt, then its state loaded.

    The state is read as `load_state_from_file` reads it (same keywords). The config's
    tags are resolved in `registry` (default: flambe's built-ins, torch's classes and
    every `Component` subclass defined so far; `flambe_compat.shim.install()` lets code
    written for flambe define them). Extension modules the config names are imported only
    when allowed: listed in `extensions`, `trusted=True`, or `auto_install=True` (which
    also pip-installs missing ones, as flambe did). Nodes saved at another version are
    brought to their class's by the registered class migrations first; a major-version
    mismatch with none is an error, as in flambe.

    Every failure is a `LoadError` naming the file and the config node.
    """
    from .objects import rebuild

    state = load_state_from_file(
        path,
        map_location,
        pickle_module,
        allow_globals=allow_globals,
        trusted=trusted,
        strict=strict,
        verify=verify,
        class_versions=class_versions,
        class_migrations=class_migrations,
        **pickle_load_args,
    )
    try:
        return rebuild(
            state,
            registry=registry,
            trusted=trusted,
            auto_install=auto_install,
            extensions=extensions,
            class_migrations=class_migrations,
        )
    except LoadError as error:
        raise LoadError(f"{os.fspath(path)}: {error}") from None

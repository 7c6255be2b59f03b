"""Writing archives: protocol 1 as flambe 0.4.18 writes and reads it (revision 1.4), and ours.

The four modes of `save_state_to_file`: a folder mirroring the Components, that folder
in a tar.gz, one pickle of the `State`, or that pickle in a tar.gz. Both protocols share
the folder writer, which streams a compressed save's files into its tar.gz as they are
made (`flambe_compat.destination`), and the staging and atomic publishing of
`flambe_compat.publish`; protocol 2 adds `manifest.json` (see `flambe_compat.manifest`).
Protocol 1 differs from flambe, invisibly to its readers: folder names below a dotted
folder are right, `requirements.txt` comes from `importlib.metadata` instead of `pip
freeze`, the archive is published atomically, and gzip is faster (see
`flambe_compat.compress`).

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
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import dill
import torch

from .archive import Archive, Layout
from .compress import tar_gz_writer
from .destination import Destination, Folder, Tarball
from .hashing import HashedFile, WrittenFile
from .layout import (
    COMPRESSED_SUFFIX,
    CONFIG_FILE_NAME,
    DEFAULT_PROTOCOL,
    MANIFEST_FILE_NAME,
    PICKLE_SUFFIX,
    PROTOCOL_1,
    PROTOCOL_VERSION_FILE_NAME,
    REQUIREMENTS_FILE_NAME,
    SOURCE_FILE_NAME,
    STASH_FILE_NAME,
    STATE_FILE_NAME,
    VERSION_FILE_NAME,
)
from .manifest import PROTOCOL_2, build_manifest, manifest_text, pickle_payload
from .manifest import REVISION as REVISION_2
from .payload import scan_pickle
from .publish import check_target, publish, staging
from .revisions import FLAMBE_READABLE, Revision, info
from .state import State
from .torchzip import plan_zip
from .tree import SaveTreeNode, _traverse_all_nodes, node_payload, tree_metadata
from .unpickle import LEGACY_STATE


def archive_path(path: str | Path, compress: bool, pickle_only: bool) -> Path:
    """Where flambe puts a save of `path`: `.pkl` for pickles, then `.tar.gz` if compressed.

    >>> archive_path("models/m/", True, True)
    PosixPath('models/m.pkl.tar.gz')
    """
    name = str(path).rstrip("/")
    return Path(
        name + (PICKLE_SUFFIX if pickle_only else "") + (COMPRESSED_SUFFIX if compress else "")
    )


@dataclass(frozen=True)
class Encoding:
    """How a save folder of one revision encodes its files."""

    protocol: int = PROTOCOL_1
    pickle_module: Any = dill
    pickle_protocol: int = DEFAULT_PROTOCOL
    node_metadata: bool = True
    """Each `state.pt` keeps its `_metadata` (revision 1.3 on)."""
    torch_stash: bool = True
    """`stash.pkl` is a `torch.save` file (1.1 on), not a bare pickle."""
    requirements: bool = True
    """The root holds `requirements.txt` (1.4 on)."""


def encoding_for(revision: str) -> Encoding:
    """The folder encoding of `revision` (`2.0`: standard pickle, protocol 2).

    >>> encoding_for("1.2")
    Encoding(protocol=1, ..., node_metadata=False, torch_stash=True, requirements=False)
    """
    if revision == REVISION_2:
        return Encoding(protocol=PROTOCOL_2, pickle_module=pickle)
    row = info(revision)
    return Encoding(
        node_metadata=row.node_metadata,
        torch_stash=row.torch_stash,
        requirements=row.requirements,
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
    """Write `state` as flambe 0.4.18 would (revision 1.4); returns the archive's path."""
    archive = Archive.of_state(state, FLAMBE_READABLE, "pickle" if pickle_only else "folder")
    encoding = Encoding(pickle_module=pickle_module, pickle_protocol=pickle_protocol)
    return write_archive(archive, path, compress, overwrite, encoding)


def write_protocol2(
    state: State,
    path: str | Path,
    compress: bool = False,
    pickle_only: bool = False,
    overwrite: bool = False,
    original_revision: Revision | None = None,
    requirements_text: str | None = None,
) -> Path:
    """Write `state` in protocol 2; returns the archive's path.

    A folder (or `.tar.gz`) with `manifest.json`, or one `.pkl` (or `.pkl.tar.gz`) of
    `manifest.pickle_payload`; every payload is a zip-format `torch.save` with the
    standard `pickle`, loadable with `torch.load(weights_only=True, mmap=True)` when it
    holds only tensors and plain data. `original_revision` records the revision an
    upgraded archive came from; `requirements_text` keeps its `requirements.txt`.

    >>> import tempfile, pathlib
    >>> from flambe_compat.tree import node_metadata
    >>> s = State({"count": 1}); s._metadata = {"_flambe_directories": {""},
    ...     "keep_vars": False, "": node_metadata("Counter")}
    >>> saved = write_protocol2(s, pathlib.Path(tempfile.mkdtemp()) / "m")
    >>> (saved / "manifest.json").is_file(), (saved / "protocol_version.txt").read_text()
    (True, '2')
    """
    layout: Layout = "pickle" if pickle_only else "folder"
    archive = Archive.of_state(state, REVISION_2, layout, requirements_text, original_revision)
    return write_archive(archive, path, compress, overwrite)


def write_archive(
    archive: Archive,
    path: str | Path,
    compress: bool = False,
    overwrite: bool = False,
    encoding: Encoding | None = None,
) -> Path:
    """Write a decoded `Archive` in its own revision, keeping its `requirements.txt`.

    Revisions 1.0 - 1.3 are written as flambe's releases of the time wrote them (the
    migration chain checks each step this way); tarballs always name members from the
    basename, as 1.2 on do. `encoding` overrides the revision's (`encoding_for`).
    """
    encoding = encoding or encoding_for(archive.revision)
    pickle_only = archive.layout == "pickle"

    def build(files: Destination, name: str) -> None:
        if pickle_only:
            _write_pickle(archive, files, name, encoding)
            return
        written = _write_folder(archive, files, encoding)
        if encoding.protocol == PROTOCOL_2:  # the manifest, the commit marker, comes last
            manifest = build_manifest(
                archive.tree,
                archive.keep_vars,
                written.files,
                written.named_globals,
                archive.original_revision,
            )
            files.whole(MANIFEST_FILE_NAME, manifest_text(manifest).encode("utf-8"))

    return _write_archive(path, compress, pickle_only, overwrite, build)


def _write_pickle(archive: Archive, files: Destination, name: str, encoding: Encoding) -> None:
    """The one file of a pickle-only archive: the only writer of a flat `State`."""
    state = archive.state()
    with files.plain(name) as file:
        if encoding.protocol == PROTOCOL_2:
            payload = pickle_payload(state, archive.original_revision)
            torch.save(payload, file, pickle, DEFAULT_PROTOCOL)
        else:
            dump_legacy_pickle(state, file, encoding.pickle_module, encoding.pickle_protocol)


def _write_archive(
    path: str | Path,
    compress: bool,
    pickle_only: bool,
    overwrite: bool,
    build: Callable[[Destination, str], None],
) -> Path:
    """Build the save in a staging folder with `build(files, name)` and publish it.

    A folder is built below `files` at its root, a pickle-only archive as its file
    `name`; compressed, they are streamed into the tar.gz as members below `name`.
    """
    target = archive_path(path, compress, pickle_only)
    check_target(target, overwrite)
    inner_name = archive_path(path, False, pickle_only).name
    root = "" if pickle_only else inner_name  # where the files go below the scratch folder
    with staging(target) as scratch:
        built = scratch / (target.name if compress else inner_name)
        if not compress:
            build(Folder(scratch / root), inner_name)
        else:
            with tar_gz_writer(built) as tar:
                build(Tarball(tar, root, scratch), inner_name)
        publish(built, target, overwrite)
    return target


def _write_folder(archive: Archive, files: Destination, encoding: Encoding) -> Written:
    """The folder tree and `requirements.txt`; returns what was written (see `Written`)."""
    metadata = tree_metadata(archive.tree, archive.keep_vars)
    written = write_tree(archive.tree, files, encoding, metadata)
    if encoding.requirements:
        text = requirements() if archive.requirements is None else archive.requirements
        file = files.whole(REQUIREMENTS_FILE_NAME, text.encode("utf-8"))
        written.files[REQUIREMENTS_FILE_NAME] = (file.size, file.sha256)
    return written


@dataclass
class Written:
    """What a folder writer wrote: each file (POSIX path below the root) with its size
    and sha256, and the globals its payloads' pickles name (protocol 2 only)."""

    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    named_globals: set[str] = field(default_factory=set)


def write_tree(
    save_tree: SaveTreeNode, files: Destination, encoding: Encoding, metadata: Mapping[str, Any]
) -> Written:
    """One folder per node with flambe's six files, encoded as `encoding` says, put in
    `files`; the root's `state.pt` records the tree's `metadata` (`tree.tree_metadata`)
    from 1.3 on.

    For protocol 2 every file is hashed from the bytes being written (large chunks on a
    helper thread, see `flambe_compat.hashing`) and every payload's pickle is kept for
    the manifest's scan of globals. Nodes are written one after the other: threads
    writing several nodes at once fight over the GIL and made saves slower, not faster.
    """
    written = Written()
    hashed: dict[str, HashedFile | WrittenFile] = {}
    scanned: set[bytes] = set()  # the pickles of empty stashes are all alike
    with ThreadPoolExecutor(max_workers=2) as hasher:  # a tensor's sha256 and its CRC
        for node_path, node in _traverse_all_nodes(save_tree):
            own = {} if node_path else metadata
            node_files, pickles = _write_node(node_path, node, own, files, encoding, hasher)
            hashed.update(node_files)
            for data in pickles:
                if data not in scanned:
                    scanned.add(data)
                    written.named_globals |= scan_pickle(data).globals
        written.files = {path: (file.size, file.sha256) for path, file in hashed.items()}
    return written


def _write_node(
    node_path: list[str],
    node: SaveTreeNode,
    metadata: Mapping[str, Any],
    files: Destination,
    encoding: Encoding,
    hasher: Executor,
) -> tuple[dict[str, HashedFile | WrittenFile], list[bytes]]:
    """One node's folder (`metadata`: the tree's, for the root); returns its files (whose
    digests may still be being computed) and its payloads' pickles (protocol 2 only)."""
    prefix = "".join(f"{part}/" for part in node_path)
    files.folder(prefix)  # parents come first
    state = node_payload(node, metadata) if encoding.node_metadata else OrderedDict(node.state)
    payloads = [(state, STATE_FILE_NAME)]
    if encoding.torch_stash:
        payloads.append((node.object_stash, STASH_FILE_NAME))
    else:
        with files.plain(prefix + STASH_FILE_NAME) as file:
            encoding.pickle_module.dump(node.object_stash, file, encoding.pickle_protocol)
    texts = {
        VERSION_FILE_NAME: f"{node.class_name}:{node.version}",
        SOURCE_FILE_NAME: node.source_code,
        CONFIG_FILE_NAME: node.config,
        PROTOCOL_VERSION_FILE_NAME: str(encoding.protocol),
    }
    if encoding.protocol != PROTOCOL_2:
        for value, name in payloads:
            with files.plain(prefix + name) as file:
                torch.save(value, file, encoding.pickle_module, encoding.pickle_protocol)
        for name, text in texts.items():
            files.whole(prefix + name, text.encode("utf-8"))
        return {}, []
    written: dict[str, HashedFile | WrittenFile] = {}
    pickles = []
    for value, name in payloads:
        planned = plan_zip(value, encoding.pickle_protocol)
        size = planned.size if planned is not None and files.sizes_first else None
        with files.hashed(prefix + name, size, hasher) as hashed:
            if planned is not None:
                planned.write(cast(IO[bytes], hashed), hasher)
                pickled = planned.pickled
            else:  # too large for a plain zip file: torch writes ZIP64
                kept = _KeptPickle(encoding.pickle_module)
                torch.save(value, cast(IO[bytes], hashed), kept, encoding.pickle_protocol)
                pickled = kept.data
        written[prefix + name] = hashed
        pickles.append(pickled)
    for name, text in texts.items():
        written[prefix + name] = files.whole(prefix + name, text.encode("utf-8"))
    return written, pickles


class _KeptPickle:
    """A pickle module for `torch.save` that keeps the last pickle dumped (`data.pkl`),
    for the manifest's scan of globals without reading the payload back."""

    def __init__(self, base: Any) -> None:
        kept = self
        self.__name__ = f"{__name__}.kept_{base.__name__}"
        self.data = b""

        class Pickler(base.Pickler):  # type: ignore[misc]
            def __init__(self, file: Any, protocol: int | None = None) -> None:
                super().__init__(file, protocol)
                self._buffer = file

            def dump(self, obj: Any) -> None:
                super().dump(obj)
                kept.data = self._buffer.getvalue()

        self.Pickler = Pickler


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

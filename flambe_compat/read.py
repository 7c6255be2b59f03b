"""Decoding a validated archive into its save tree, held by an `Archive` (whose `State` the
API builds at its edge).

Validation has already judged the archive's structure and read its files: this module
decodes what the description holds (texts, payloads read whole) and reads the rest of
the payloads once. Payloads that peeking decoded completely (no tensor) are not decoded
again; under the bare allow-list a load describes its payloads by decoding them
(`Decoder.describes`), and those values are used as they are. Every payload goes
through `unpickle` (the allow-list unless the caller trusts the archive); a payload that
still fails becomes a `LoadError` naming the file.

>>> from flambe_compat.pipeline import inspected
>>> from flambe_compat.unpickle import Trust
>>> with inspected("fixtures/flambe-corpus/0.4.18-zip/counter-dir") as inspection:
...     archive = read_archive(inspection, Decoder(Trust()))
>>> dict(archive.state()), archive.revision
({'label': 'steps', 'count': 5}, '1.4')
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .archive import Archive
from .describe import NodeSummary, PayloadSummary
from .errors import LoadError
from .integrity import state_from_payload
from .layout import (
    CONFIG_FILE_NAME,
    FLAMBE_DIRECTORIES_KEY,
    KEEP_VARS_KEY,
    PROTOCOL_2,
    REQUIREMENTS_FILE_NAME,
    SOURCE_FILE_NAME,
    STASH_FILE_NAME,
    STATE_FILE_NAME,
)
from .payload import PayloadFile
from .repair import repaired
from .state import State
from .tree import TREE_METADATA_KEYS, SaveTreeNode, renamed_folders
from .unpickle import Trust, UnsafeGlobalError, torch_load, unpickle

if TYPE_CHECKING:
    from .pipeline import Inspection

T = TypeVar("T")


def read_archive(inspection: Inspection, decoder: Decoder) -> Archive:
    """The decoded `Archive` of an archive that validation found valid.

    A pickle's `State` is split into its tree here. Protocol 2 payloads read from disk
    are memory-mapped (`torch.load(mmap=True)`): tensor bytes are read when used, not up
    front. Keys flambe 0.4.5 - 0.4.11 saved wrong are given back as the objects had them
    (`flambe_compat.repair`).
    """
    description, detection = inspection.description, inspection.detection
    if description is None or detection.revision is None:
        raise LoadError(f"{inspection.opened.source}: no revision was detected")
    mmap = detection.protocol == PROTOCOL_2
    original_revision = inspection.original_revision if mmap else None
    if description.pickle is not None:
        state = _read_pickle(description.pickle, decoder, mmap)
        return Archive.of_state(
            state, detection.revision, detection.layout, original_revision=original_revision
        )
    tree, recorded = _tree_and_its_metadata(_read_tree(description.nodes, decoder, mmap))
    directories = recorded.get(FLAMBE_DIRECTORIES_KEY)
    if isinstance(directories, (set, frozenset, list)):
        tree = renamed_folders(tree, directories)
    root = description.nodes[0]
    requirements = root.texts.get(REQUIREMENTS_FILE_NAME)
    if requirements is None and REQUIREMENTS_FILE_NAME in root.folder.files:
        requirements = _read_text(root.folder.path / REQUIREMENTS_FILE_NAME)
    archive = Archive(
        tree,
        detection.revision,
        detection.layout,
        requirements,
        original_revision,
        keep_vars=recorded.get(KEEP_VARS_KEY),
    )
    return repaired(archive)


@dataclass
class Decoder:
    """How payloads are decoded: the trust policy, and torch's load options."""

    trust: Trust
    pickle_module: Any = pickle
    map_location: Any = None
    load_args: dict[str, Any] = field(default_factory=dict)

    @property
    def describes(self) -> bool:
        """Whether a payload decoded through this decoder may be described from its value:
        only under the bare allow-list (then decoding runs nothing peeking would not)."""
        return not self.trust.trusted and not self.trust.allow_globals

    def decode(self, payload: PayloadFile, mmap: bool = False) -> Any:
        """A `torch.save` file in either format, or (0.4.0-0.4.4 stashes) a bare pickle.

        Payloads read whole are decoded from memory; others from their file
        (memory-mapped with `mmap`). Whatever fails is a `LoadError` naming the file.
        """
        trust, module = self.trust, self.pickle_module
        args = {"map_location": self.map_location, **self.load_args}
        if payload.format == "pickle":

            def load() -> Any:
                with payload.open() as file:
                    return unpickle(file, trust, module, **args)

            return _decoded(payload, load)
        if payload.data is not None:
            data = payload.data
            return _decoded(payload, lambda: torch_load(data, trust, module, **args))
        return _decoded(payload, lambda: torch_load(payload.path, trust, module, mmap=mmap, **args))


def _read_pickle(summary: PayloadSummary, decoder: Decoder, mmap: bool) -> State:
    """A pickle-only archive: flambe's pickle of the whole `State`, or our protocol 2 file."""
    payload = summary.file
    value = _value(summary, decoder, mmap)
    if payload.format == "zip":
        return state_from_payload(value, payload.path)
    if not isinstance(value, Mapping) or not isinstance(getattr(value, "_metadata", None), dict):
        raise LoadError(f"{payload.path}: the pickle does not hold a flambe State")
    if isinstance(value, State):
        return value
    state = State(value)
    state._metadata = value._metadata  # type: ignore[attr-defined]
    return state


def _tree_and_its_metadata(tree: SaveTreeNode) -> tuple[SaveTreeNode, dict[str, Any]]:
    """The tree without, and the entries of, what its root's `_metadata` records about
    the whole tree (revision 1.3 on; see `tree.tree_metadata`)."""
    metadata = getattr(tree.state, "_metadata", None)
    if not isinstance(metadata, Mapping) or not any(k in metadata for k in TREE_METADATA_KEYS):
        return tree, {}
    state: dict[str, Any] = OrderedDict(tree.state)
    state._metadata = {  # type: ignore[attr-defined]
        key: value for key, value in metadata.items() if key not in TREE_METADATA_KEYS
    }
    recorded = {key: metadata[key] for key in TREE_METADATA_KEYS if key in metadata}
    return tree._replace(state=state), recorded


def _read_tree(nodes: list[NodeSummary], decoder: Decoder, mmap: bool) -> SaveTreeNode:
    """The save tree of the described node folders (parents first)."""
    children: dict[str, dict[str, SaveTreeNode]] = {}
    for node in reversed(nodes):  # children before their parents
        built = _read_node(node, children.pop(node.relative, {}), decoder, mmap)
        parent, _, name = node.relative.rpartition("/")
        children.setdefault(parent if node.relative else "..", {})[name] = built
    return children[".."][""]


def _read_node(
    node: NodeSummary, children: dict[str, SaveTreeNode], decoder: Decoder, mmap: bool
) -> SaveTreeNode:
    state, stash = (
        _payload_value(node, name, summary, decoder, mmap)
        for name, summary in ((STATE_FILE_NAME, node.state), (STASH_FILE_NAME, node.stash))
    )
    if not isinstance(state, dict) or not isinstance(stash, dict):
        raise LoadError(f"{node.folder.path}: state.pt and stash.pkl must each hold a dict")
    version_file = node.version_file or ""
    class_name, _, version = version_file.partition(":")
    return SaveTreeNode(
        state=state,
        version=version,
        class_name=class_name,
        source_code=_text(node, SOURCE_FILE_NAME),
        config=_text(node, CONFIG_FILE_NAME),
        object_stash=stash,
        children=dict(sorted(children.items())),
    )


def _payload_value(
    node: NodeSummary, name: str, summary: PayloadSummary | None, decoder: Decoder, mmap: bool
) -> Any:
    if summary is None:
        raise LoadError(f"{node.folder.path / name}: missing or empty")
    return _value(summary, decoder, mmap)


def _value(summary: PayloadSummary, decoder: Decoder, mmap: bool) -> Any:
    """A described payload's value: as describing decoded it, or decoded now."""
    if summary.decode_error is not None:
        raise summary.decode_error
    if summary.is_decoded:
        value = summary.decoded
    elif summary.is_plain:
        value = summary.plain
    else:
        value = decoder.decode(summary.file, mmap)
    summary.forget()  # the tensors hold what they need: drop the bytes and values read
    return value


def _text(node: NodeSummary, name: str) -> str:
    try:
        return node.texts[name]
    except KeyError:
        raise LoadError(f"{node.folder.path / name}: cannot be read") from None


def _decoded(payload: PayloadFile, load: Callable[[], T]) -> T:
    """Run `load`, turning whatever a bad payload raises into a `LoadError` naming it."""
    try:
        return load()
    except LoadError:
        raise
    except UnsafeGlobalError as error:
        raise LoadError(f"{payload.path}: {error}") from None
    except (Exception, RecursionError, MemoryError) as error:
        message = " ".join(str(error).split())[:300]
        raise LoadError(
            f"{payload.path}: cannot be decoded ({type(error).__name__}: {message})"
        ) from None


def _read_text(path: Any) -> str:
    try:
        text: str = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeError) as error:
        raise LoadError(f"{path}: cannot be read ({error})") from None
    return text

"""`repair`: the keys flambe 0.4.5 - 0.4.11 saved wrong for Components held in containers."""

from __future__ import annotations

from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st

from flambe_compat import load_state_from_file, upgrade
from flambe_compat.archive import Archive
from flambe_compat.repair import repaired
from flambe_compat.state import State
from flambe_compat.tree import flambe_component_folders, node_metadata

OBJECTS = Path(__file__).resolve().parent.parent / "fixtures" / "flambe-objects"


def _state(keys: list[str], directories: set[str]) -> State:
    state = State((key, i) for i, key in enumerate(keys))
    state._metadata = {"_flambe_directories": set(directories)}
    for prefix in sorted(directories):
        state._metadata[prefix] = node_metadata(f"C{prefix}")
    return state


def _as_flambe_read_it(true: State) -> State:
    """What flambe 0.4.5 - 0.4.11 saved and its reader returned, from the true State.

    Each Component's folder name is `flambe_component_folders`'s, and a key in a node
    reached through n folders lost its first n parts (not the node's prefix).
    """
    directories = true._metadata["_flambe_directories"]
    folders = {p: flambe_component_folders(p, directories) if p else [] for p in directories}

    def owner(key: str) -> str:
        return max(
            (p for p in directories if p == "" or key.startswith(p + ".")),
            key=lambda p: len(p.split(".")) if p else 0,
        )

    def read(key: str) -> str:
        path = folders[owner(key)]
        return ".".join([*path, *key.split(".")[len(path) :]])

    state = State((read(key), value) for key, value in true.items())
    state._metadata = {"_flambe_directories": {".".join(folders[p]) for p in directories}}
    for prefix in directories:
        state._metadata[".".join(folders[prefix])] = true._metadata[prefix]
    return state


def test_a_tower_saved_by_0_4_11() -> None:
    keys = ["blocks.0.0.linear.weight", "blocks.1.1.norm.bias", "out.weight"]
    read = _state(keys, {"", "blocks.0", "blocks.1"})
    fixed = repaired(Archive.of_state(read, revision="1.2", layout="folder")).state()
    assert dict(fixed) == {"blocks.0.linear.weight": 0, "blocks.1.norm.bias": 1, "out.weight": 2}


def test_two_containers_deep() -> None:
    true = _state(
        ["towers.0.blocks.0.linear.weight", "towers.0.out.bias", "towers.1.blocks.1.norm.weight"],
        {"", "towers.0", "towers.0.blocks.0", "towers.1", "towers.1.blocks.1"},
    )
    read = _as_flambe_read_it(true)
    assert "towers.0.0.blocks.0.blocks.0.linear.weight" in read
    fixed = repaired(Archive.of_state(read, revision="1.1", layout="folder")).state()
    assert dict(fixed) == dict(true)  # a folder's order is its tree's
    assert fixed._metadata == true._metadata


def test_archives_flambe_wrote_right_are_left_alone() -> None:
    read = _state(["blocks.0.0.linear.weight"], {"", "blocks.0"})
    for revision in ("1.0", "1.3", "1.4", "2.0"):
        archive = Archive.of_state(read, revision=revision, layout="folder")
        assert repaired(archive) is archive
    pickle = Archive.of_state(read, revision="1.1", layout="pickle")
    assert repaired(pickle) is pickle


def test_a_shape_the_defective_writer_could_not_write_is_left_alone() -> None:
    # in `blocks.0` the writer repeated the part `0` before every key
    read = _state(["blocks.0.linear.weight", "blocks.0.0.norm.bias"], {"", "blocks.0"})
    archive = Archive.of_state(read, revision="1.2", layout="folder")
    assert repaired(archive) is archive
    # a folder below a dotted one must repeat its parent's last parts
    deeper = _state(["a.0.x.y.w"], {"", "a.0", "a.0.x.y"})
    archive = Archive.of_state(deeper, revision="1.2", layout="folder")
    assert repaired(archive) is archive


def test_single_part_folders_need_nothing() -> None:
    read = _state(["model.inner.w", "model.b"], {"", "model", "model.inner"})
    archive = Archive.of_state(read, revision="1.2", layout="folder")
    assert repaired(archive) is archive


_ATTRIBUTES = st.sampled_from(["m", "l.0", "l.1", "seq.2", "x"])
_LEAVES = st.sampled_from(["weight", "bias", "lin.weight", "norm.bias", "k"])


@st.composite
def _graphs(draw: st.DrawFn) -> State:
    """A true State: Components at one- or two-part attributes, leaves below each.

    Leaves and attributes start with different parts, so no key runs into a Component.
    """
    directories = {""}
    frontier = [""]
    while frontier and len(directories) < 8:
        parent = frontier.pop()
        for attribute in draw(st.lists(_ATTRIBUTES, max_size=3, unique=True)):
            prefix = f"{parent}.{attribute}" if parent else attribute
            directories.add(prefix)
            frontier.append(prefix)
    keys = [
        f"{prefix}.{leaf}" if prefix else leaf
        for prefix in sorted(directories)
        for leaf in draw(st.lists(_LEAVES, min_size=1, max_size=2, unique=True))
    ]
    return _state(keys, directories)


@given(_graphs())
def test_any_graph_comes_back_as_saved(true: State) -> None:
    read = _as_flambe_read_it(true)
    fixed = repaired(Archive.of_state(read, revision="1.2", layout="folder")).state()
    assert dict(fixed) == dict(true)  # a folder's order is its tree's
    assert fixed._metadata == true._metadata


def test_an_upgraded_archive_keeps_the_true_keys(tmp_path: Path) -> None:
    source = OBJECTS / "0.4.11-legacy" / "tower-dir"
    upgrade(source, tmp_path / "tower")
    state = load_state_from_file(tmp_path / "tower")
    assert "blocks.0.linear.weight" in state and "blocks.0.0.linear.weight" not in state
    assert torch.equal(
        state["blocks.1.norm.bias"], load_state_from_file(source)["blocks.1.norm.bias"]
    )

"""The writer (`flambe_compat.write`) in protocol 2: flambe's layout plus manifest.json, plain
zip-format payloads (protocol 1 saves: `test_roundtrip.py` and, against real flambe,
`test_interop_oracle.py`)."""

from __future__ import annotations

import datetime
import json
import pickle
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import flambe_compat
from flambe_compat import load_state_from_file, save_state_to_file
from flambe_compat.integrity import check_files, read_manifest, state_from_payload
from flambe_compat.layout import MANIFEST_FILE_NAME, NODE_FILES, REQUIREMENTS_FILE_NAME
from flambe_compat.state import State
from flambe_compat.tree import node_metadata, state_to_tree
from flambe_compat.write import archive_path, write_protocol1, write_protocol2

WRAPPER = Path(__file__).resolve().parent.parent / "fixtures/flambe-corpus/0.4.18-legacy"
MODES = {"dir": (False, False), "tgz": (True, False), "pkl": (False, True), "pkltgz": (True, True)}


def checked_manifest(root: Path) -> dict[str, Any]:
    """The manifest of `root`, after every file (hashed, whatever its size) matched it."""
    manifest = read_manifest(root)
    assert check_files(root, manifest, verify=True) == []
    return manifest


def make_state(nodes: int = 4, width: int = 8, seed: int = 0, stash: Any = None) -> State:
    """A root Component with `nodes - 1` children, each holding tensors and plain values."""
    generator = torch.Generator().manual_seed(seed)
    state = State()
    metadata: dict[str, Any] = {
        "_flambe_directories": {""},
        "keep_vars": False,
        "": {**node_metadata("Root", "1.2.3", "class Root: ...\n", "!Root\n"), "version": 1},
    }
    if stash is not None:
        metadata[""]["_flambe_stash"] = stash
    for index in range(nodes - 1):
        prefix = f"child{index}"
        metadata["_flambe_directories"].add(prefix)
        metadata[prefix] = node_metadata(
            "Leaf", "0.1.0", "class Leaf: ...\n", f"!Leaf\ni: {index}\n"
        )
        metadata[f"{prefix}.linear"] = {"version": 1}
        state[f"{prefix}.linear.weight"] = torch.randn(width, width, generator=generator)
        state[f"{prefix}.linear.bias"] = torch.randn(width, generator=generator).half()
        state[f"{prefix}.steps"] = [index, {"seen": index * 2}]
        state[f"{prefix}.label"] = f"leaf {index}"
    state["seed"] = seed
    state._metadata = metadata
    return state


def wrapper_state() -> State:
    """A real flambe 0.4.18 state: nested Components, torch metadata, a stash with a tensor."""
    return load_state_from_file(WRAPPER / "wrapper-pkl.pkl")


def assert_same(got: Any, want: Any) -> None:
    """Equal values, tensors compared exactly (dtype, shape, bytes), mappings in order."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype
        assert torch.equal(got, want)
    elif isinstance(want, Mapping):
        assert isinstance(got, Mapping) and list(got) == list(want)
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for item, expected in zip(got, want, strict=True):
            assert_same(item, expected)
    else:
        assert got == want


def saved(tmp_path: Path, state: State, mode: str = "dir", **options: Any) -> Path:
    compress, pickle_only = MODES[mode]
    return write_protocol2(state, tmp_path / "m", compress, pickle_only, **options)


@pytest.mark.parametrize("mode", MODES)
def test_archive_path_and_tar_members_as_protocol_1(tmp_path: Path, mode: str) -> None:
    compress, pickle_only = MODES[mode]
    path = saved(tmp_path, make_state(), mode)
    assert path == archive_path(tmp_path / "m", compress, pickle_only)
    if compress:
        with tarfile.open(path) as tar:
            names = tar.getnames()
        inner = "m.pkl" if pickle_only else "m"
        assert names[0] == inner and all(n == inner or n.startswith(inner + "/") for n in names)
        assert (f"{inner}/{MANIFEST_FILE_NAME}" in names) is not pickle_only
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("pickle_only", [False, True], ids=["folder", "pickle"])
def test_a_compressed_save_streams_into_its_tarball_without_a_folder_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: int, pickle_only: bool
) -> None:
    state = wrapper_state()
    save_state_to_file(state, tmp_path / "plain", pickle_only=pickle_only, protocol=protocol)
    plain = archive_path(tmp_path / "plain", False, pickle_only)

    def no_folder(root: Path) -> None:
        raise AssertionError(f"a compressed save built a folder at {root}")

    monkeypatch.setattr("flambe_compat.write.Folder", no_folder)
    save_state_to_file(
        state, tmp_path / "packed", compress=True, pickle_only=pickle_only, protocol=protocol
    )
    compressed = archive_path(tmp_path / "packed", True, pickle_only)
    with tarfile.open(compressed, "r:gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    unpacked = tmp_path / "unpacked" / plain.name.replace("plain", "packed")
    assert_same(load_state_from_file(unpacked), load_state_from_file(plain))
    if protocol == 2 and not pickle_only:
        checked_manifest(unpacked)
        files = {p.relative_to(plain).as_posix() for p in plain.rglob("*") if p.is_file()}
        assert files == {
            p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()
        }
        for name in files:
            if not name.endswith(MANIFEST_FILE_NAME):
                assert (unpacked / name).read_bytes() == (plain / name).read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [plain.name, compressed.name, "unpacked"]
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_save_that_fails_midway_leaves_nothing(tmp_path: Path, mode: str) -> None:
    state = make_state(nodes=6)
    state["child3.label"] = lambda: None  # the standard pickle refuses it, after 3 nodes
    with pytest.raises((AttributeError, pickle.PicklingError), match="pickle"):
        saved(tmp_path, state, mode)
    assert list(tmp_path.iterdir()) == []


def test_folder_layout_is_protocol_1_plus_the_manifest(tmp_path: Path) -> None:
    state = wrapper_state()
    new = saved(tmp_path, state)
    old = write_protocol1(state, tmp_path / "old")
    files = {p.relative_to(new).as_posix() for p in new.rglob("*") if p.is_file()}
    assert files == {p.relative_to(old).as_posix() for p in old.rglob("*") if p.is_file()} | {
        MANIFEST_FILE_NAME
    }
    for folder in {new, *(p for p in new.rglob("*") if p.is_dir())}:
        assert {name for name in NODE_FILES} <= {p.name for p in folder.iterdir()}
        assert (folder / "protocol_version.txt").read_text() == "2"
    assert (new / REQUIREMENTS_FILE_NAME).read_text() == (old / REQUIREMENTS_FILE_NAME).read_text()


@pytest.mark.parametrize("make", [make_state, wrapper_state], ids=["plain", "wrapper"])
def test_payloads_load_weights_only_with_mmap_and_hold_each_node(tmp_path: Path, make: Any) -> None:
    state = make()
    root = saved(tmp_path, state)
    tree = state_to_tree(state)
    manifest = checked_manifest(root)
    nodes = {node["folder"]: node for node in manifest["nodes"]}
    expected = {"/".join(path): node for path, node in _walk(tree)}
    assert sorted(nodes) == sorted(expected)
    tree_level = {"_flambe_directories": state._metadata["_flambe_directories"], "keep_vars": False}
    for folder, node in expected.items():
        state_pt = torch.load(root / folder / "state.pt", weights_only=True, mmap=True)
        assert_same(state_pt, node.state)
        metadata = {**(tree_level if folder == "" else {}), **node.state._metadata}
        assert_same(state_pt._metadata, metadata)  # as revisions 1.3 and 1.4
        assert_same(torch.load(root / folder / "stash.pkl", weights_only=True), node.object_stash)
        assert nodes[folder]["keys"] == list(node.state)
    root_metadata = torch.load(root / "state.pt", weights_only=True)._metadata
    assert root_metadata["_flambe_directories"] == state._metadata["_flambe_directories"]
    assert root_metadata["keep_vars"] is False


def _walk(tree: Any, path: tuple[str, ...] = ()) -> Any:
    yield path, tree
    for name, child in tree.children.items():
        yield from _walk(child, (*path, name))


@pytest.mark.parametrize("make", [make_state, wrapper_state], ids=["plain", "wrapper"])
def test_pickle_only_is_versioned_and_loads_weights_only(tmp_path: Path, make: Any) -> None:
    state = make()
    path = saved(tmp_path, state, "pkl", original_revision="1.4")
    payload = torch.load(path, weights_only=True, mmap=True)
    assert payload["flambe_compat"]["protocol"] == 2
    assert payload["flambe_compat"]["revision"] == "2.0"
    assert payload["flambe_compat"]["original_revision"] == "1.4"
    assert type(payload["state"]).__name__ == "OrderedDict"
    back = state_from_payload(payload, path)
    assert isinstance(back, State)
    assert_same(back, state)
    assert_same(back._metadata, state._metadata)


def test_manifest_records_writer_time_and_original_revision(tmp_path: Path) -> None:
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    root = saved(tmp_path, make_state(), original_revision="1.3")
    manifest = json.loads((root / MANIFEST_FILE_NAME).read_text(encoding="utf-8"))
    assert manifest["writer"] == {"name": "flambe-compat", "version": flambe_compat.__version__}
    assert manifest["original_revision"] == "1.3"
    assert manifest["created"].endswith("Z")
    created = datetime.datetime.fromisoformat(manifest["created"].replace("Z", "+00:00"))
    assert before <= created <= datetime.datetime.now(datetime.timezone.utc)


def test_manifest_is_sorted_json_one_line_per_node_and_file(tmp_path: Path) -> None:
    text = (saved(tmp_path, make_state()) / MANIFEST_FILE_NAME).read_text(encoding="utf-8")
    manifest = json.loads(text)
    assert list(manifest) == sorted(manifest)
    lines = text.splitlines()
    for entry in (*manifest["nodes"], *manifest["files"]):
        line = f"  {json.dumps(entry, sort_keys=True, ensure_ascii=False)}"
        assert line in lines or f"{line}," in lines
    lists = [value for value in manifest.values() if isinstance(value, list) and value]
    assert len(lines) == 2 + len(manifest) + sum(1 + len(value) for value in lists)


@pytest.mark.parametrize("mode", MODES)
def test_overwrite_rules_as_flambe(tmp_path: Path, mode: str) -> None:
    first = saved(tmp_path, make_state(seed=1), mode)
    with pytest.raises(ValueError, match="overwrite=True"):
        saved(tmp_path, make_state(seed=2), mode)
    assert saved(tmp_path, make_state(seed=2), mode, overwrite=True) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_an_empty_folder_is_saved_into(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    checked_manifest(saved(tmp_path, make_state()))


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize(
    "metadata, lacks",
    [
        ({}, "lacks '_flambe_directories'"),
        ({"_flambe_directories": {""}}, "lacks ''"),
        (None, "is not flambe's"),
    ],
    ids=["no-directories", "no-root-entry", "not-a-mapping"],
)
def test_a_state_without_flambe_metadata_is_refused_and_nothing_written(
    tmp_path: Path, protocol: int, metadata: Any, lacks: str
) -> None:
    state = State({"w": torch.ones(2)})
    state._metadata = metadata
    with pytest.raises(ValueError, match=f"not a flambe State: its _metadata {lacks}"):
        save_state_to_file(state, tmp_path / "m", protocol=protocol)
    assert list(tmp_path.iterdir()) == []

"""The JSON document of an archive: nodes, files, texts and payloads, nothing executed."""

from __future__ import annotations

import collections
import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

from flambe_compat.container import opened
from flambe_compat.describe import describe, jsonable
from flambe_compat.detect import detect
from flambe_compat.peek import Opaque, TensorInfo
from flambe_compat.problems import Problem
from flambe_compat.tree import component_folders
from tests.corpus import CorpusArchive, archives, copy_of, truncate_storages

ARCHIVES = list(archives())
NODE_FILES = {
    "state.pt",
    "stash.pkl",
    "version.txt",
    "source.py",
    "config.yaml",
    "protocol_version.txt",
}


def described(path: Path) -> tuple[dict[str, Any], list[Problem]]:
    """The document of the archive at `path`, and the problems met describing it."""
    with opened(path) as archive:
        description = describe(archive, detect(archive))
        return description.as_json(), description.problems


def owner(key: str, directories: list[str]) -> str:
    """The Component prefix a flat state key belongs to (the longest matching one)."""
    return max((p for p in directories if not p or key.startswith(p + ".")), key=len)


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda a: a.id)
def test_corpus_archive_document(archive: CorpusArchive) -> None:
    document, problems = described(archive.path)
    assert problems == []
    assert json.loads(json.dumps(document)) == document
    assert (document["container"], document["layout"]) == (archive.container, archive.layout)
    saved = archive.expected["saved"]
    tensors = {
        key: {"dtype": value["tensor"].removeprefix("torch."), "shape": value["shape"]}
        for key, value in saved["values"].items()
        if "tensor" in value
    }
    if archive.layout == "pickle":
        assert document["file"]["name"] == archive.path.name.removesuffix(".tar.gz")
        state = document["state"]
        assert (state["format"], state["type"], state["keys"]) == ("pickle", "State", saved["keys"])
        assert state["tensors"] == tensors
        assert state["metadata"]["_flambe_directories"] == archive.directories
        return
    directories = archive.directories
    folders = ["/".join(component_folders(prefix, directories)) for prefix in directories]
    assert [node["folder"] for node in document["nodes"]] == sorted(
        folders, key=lambda f: (f.count("/") + bool(f), f)
    )
    node_of = dict(zip(folders, directories, strict=True))
    found_keys: set[str] = set()
    found_tensors: dict[str, Any] = {}
    for node in document["nodes"]:
        prefix = node_of[node["folder"]]
        meta = saved["metadata"][prefix]
        assert node["version_file"] == f"{meta['_flambe_class']}:{meta['_flambe_version']}"
        assert node["protocol_version"] == "1"
        assert node["config"] == {"documents": 1, "empty": False}
        assert set(node["files"]) >= NODE_FILES
        assert node["state"]["format"] == archive.torch_format
        dotted = prefix + "." if prefix else ""
        keys = {dotted + key for key in node["state"]["keys"]}
        assert {owner(key, directories) for key in keys} <= {prefix}
        found_keys |= keys
        found_tensors |= {dotted + key: t for key, t in node["state"]["tensors"].items()}
        assert node["stash"]["type"] == "dict"
    assert found_keys == set(saved["keys"])
    assert found_tensors == tensors
    has_requirements = "requirements.txt" in document["nodes"][0]["files"]
    assert has_requirements == (archive.release_tuple >= (0, 4, 15))


def test_folder_metadata_from_0_4_12() -> None:
    document, _ = described(next(a for a in ARCHIVES if a.id == "0.4.13-legacy/wrapper-dir").path)
    root, counter = document["nodes"][0]["state"], document["nodes"][1]["state"]
    assert root["metadata"]["_flambe_directories"] == ["", "counter", "model", "model.inner"]
    assert root["metadata"]["keep_vars"] is False
    assert root["metadata"][""]["_flambe_class"] == "Wrapper"
    assert counter["metadata"][""]["_flambe_class"] == "Counter"
    assert counter["value_types"] == {"label": "str", "count": "int"}


def test_links_are_problems_and_not_followed(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-zip/wrapper-dir", tmp_path)
    (folder / "model" / "escape").symlink_to(tmp_path)
    (folder / "counter" / "notes.txt").symlink_to(folder / "version.txt")
    document, problems = described(folder)
    assert [node["folder"] for node in document["nodes"]] == ["", "counter", "model", "model/inner"]
    assert "notes.txt" not in document["nodes"][1]["files"]
    assert sorted((p.path, p.rule) for p in problems) == [
        ("counter/notes.txt", "links"),
        ("model/escape", "links"),
    ]


def test_unreadable_texts_and_configs(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-zip/wrapper-dir", tmp_path)
    (folder / "counter" / "version.txt").write_bytes(b"Counter:\xff0.0.0")
    (folder / "model" / "config.yaml").write_text("a: [1\n")
    (folder / "model" / "inner" / "config.yaml").write_text("")
    (folder / "config.yaml").write_text("extensions: {}\n---\n!Wrapper\nnote: hi\n")
    document, problems = described(folder)
    root, counter, model, inner = document["nodes"]
    assert counter["version_file"] is None
    assert model["config"] == {"documents": None}
    assert inner["config"] == {"documents": 0, "empty": True}
    assert root["config"] == {"documents": 2, "empty": False}
    assert [(p.path, p.rule) for p in problems] == [
        ("counter/version.txt", "text"),
        ("model/config.yaml", "config"),
    ]
    assert "not UTF-8" in problems[0].message
    assert "not valid YAML" in problems[1].message


def test_missing_empty_and_broken_payloads(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-legacy/wrapper-dir", tmp_path)
    (folder / "counter" / "stash.pkl").unlink()
    (folder / "model" / "state.pt").write_bytes(b"")
    inner = folder / "model" / "inner" / "state.pt"
    inner.write_bytes(inner.read_bytes()[:100])
    document, problems = described(folder)
    _, counter, model, model_inner = document["nodes"]
    assert counter["stash"] is None
    assert "stash.pkl" not in counter["files"]
    assert model["state"] is None
    assert model["files"]["state.pt"] == {"size": 0}
    assert model_inner["state"] == {"format": "legacy", "error": True, "unsafe_globals": []}
    (problem,) = problems
    assert (problem.path, problem.rule) == ("model/inner/state.pt", "decode")
    assert problem.message.startswith("cannot be decoded (")


def test_unsafe_globals_are_described_not_run(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-zip/counter-dir", tmp_path)
    torch.save({"c": collections.Counter("ab"), "w": torch.zeros(2)}, folder / "stash.pkl")
    document, problems = described(folder)
    assert problems == []
    stash = document["nodes"][0]["stash"]
    assert stash["unsafe_globals"] == ["collections.Counter"]
    assert stash["value_types"] == {"c": "collections.Counter"}
    assert stash["tensors"] == {"w": {"dtype": "float32", "shape": [2]}}


def test_too_deep_metadata_is_a_decode_problem(tmp_path: Path) -> None:
    folder = copy_of("0.4.11-legacy/counter-dir", tmp_path)
    nested: dict[str, Any] = {}
    for _ in range(100):
        nested = {"x": nested}
    state: OrderedDict[str, Any] = OrderedDict(count=1)
    state._metadata = nested  # type: ignore[attr-defined]
    torch.save(state, folder / "state.pt", _use_new_zipfile_serialization=False)
    _, problems = described(folder)
    (problem,) = problems
    assert (problem.path, problem.rule) == ("state.pt", "decode")
    assert "nested deeper than 64 levels" in problem.message


class Unplain:
    def __repr__(self) -> str:
        return "U" * 500


def test_jsonable() -> None:
    stand_in = type("os.system", (Opaque,), {"qualified_name": "os.system"})()
    value = {
        1: {"b", "a"},
        "t": (1, 2.5, None, True),
        "nan": math.nan,
        "inf": -math.inf,
        "tensor": TensorInfo("int64", (2, 3)),
        "opaque": stand_in,
        "other": Unplain(),
        "frozen": frozenset({3, 1}),
    }
    assert jsonable(value) == {
        "1": ["a", "b"],
        "t": [1, 2.5, None, True],
        "nan": "nan",
        "inf": "-inf",
        "tensor": {"dtype": "int64", "shape": [2, 3]},
        "opaque": {"opaque": "os.system"},
        "other": {"repr": "U" * 200},
        "frozen": [1, 3],
    }


def test_jsonable_refuses_deep_nesting() -> None:
    nested: list[Any] = []
    for _ in range(70):
        nested = [nested]
    with pytest.raises(ValueError, match="nested deeper"):
        jsonable(nested)


def test_describing_reads_no_tensor_bytes(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-legacy/mlp-dir", tmp_path)
    state = folder / "state.pt"
    torch.save(OrderedDict(w=torch.zeros(1000, 100)), state, _use_new_zipfile_serialization=False)
    truncate_storages(state)
    document, problems = described(folder)
    assert problems == []
    assert document["nodes"][0]["state"]["tensors"] == {
        "w": {"dtype": "float32", "shape": [1000, 100]}
    }

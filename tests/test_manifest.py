"""manifest.json: schema, checksums, integrity checks, the pickle scanner, the schemas."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from flambe_compat import LoadError, integrity, load_state_from_file
from flambe_compat.integrity import check_files, read_manifest, state_from_payload
from flambe_compat.layout import MANIFEST_FILE_NAME
from flambe_compat.manifest import unsafe_globals
from flambe_compat.resources import resource_path
from flambe_compat.write import write_protocol2
from tests.test_write import make_state, wrapper_state

SCHEMAS = ("2.0.json", "pickle-2.0.json")


@dataclass
class Point:
    """A module-level class: pickles name it, and the allow-list does not."""

    x: int


def validator(name: str) -> Draft202012Validator:
    """A validator straight from the schema files, independent of flambe_compat.schema."""
    schemas = {n: json.loads(resource_path("schemas", n).read_text("utf-8")) for n in SCHEMAS}
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    return Draft202012Validator(schemas[name], registry=registry)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return write_protocol2(wrapper_state(), tmp_path / "m")


def load(root: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((root / MANIFEST_FILE_NAME).read_text("utf-8"))
    return document


def files_of(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE_NAME
    )


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_schemas_are_draft_2020_12_with_ids() -> None:
    for name in SCHEMAS:
        schema = json.loads(resource_path("schemas", name).read_text("utf-8"))
        Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith(f"/schemas/{name}") and schema["title"]
        assert schema["description"]
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        resource_path("schemas", "nothing.json")


def test_manifest_follows_its_schema(archive: Path) -> None:
    document = load(archive)
    assert list(validator("2.0.json").iter_errors(document)) == []
    assert read_manifest(archive) == document
    assert document["format"] == "flambe-compat" and document["protocol"] == 2
    assert document["revision"] == "2.0" and document["original_revision"] is None


def test_every_file_is_listed_with_size_and_sha256(archive: Path) -> None:
    listed = load(archive)["files"]
    assert [entry["path"] for entry in listed] == files_of(archive)
    for entry in listed:
        data = (archive / entry["path"]).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_nodes_describe_each_component(archive: Path) -> None:
    document = load(archive)
    assert document["directories"] == ["", "counter", "model", "model.inner"]
    assert document["keep_vars"] is False
    nodes = {node["prefix"]: node for node in document["nodes"]}
    assert [node["folder"] for node in document["nodes"]] == [
        "",
        "counter",
        "model",
        "model/inner",
    ]
    inner = nodes["model.inner"]
    assert (inner["class"], inner["version"]) == ("MLP", "0.0.0")
    assert inner["config"] == (archive / "model/inner/config.yaml").read_text()
    assert inner["keys"] == ["net.0.weight", "net.0.bias", "name"]
    assert inner["tensors"] == {
        "net.0.weight": {"dtype": "float32", "shape": [3, 3], "nbytes": 36},
        "net.0.bias": {"dtype": "float32", "shape": [3], "nbytes": 12},
    }
    assert nodes["model"]["version"] == "2.0.1"
    assert nodes["counter"]["tensors"] == {}


def test_half_precision_and_scalar_tensors(tmp_path: Path) -> None:
    document = load(write_protocol2(make_state(nodes=2, width=3), tmp_path / "m"))
    assert document["nodes"][1]["tensors"]["linear.bias"] == {
        "dtype": "float16",
        "shape": [3],
        "nbytes": 6,
    }


@pytest.mark.parametrize("verify", [False, True])
def test_a_flipped_byte_in_any_file_is_caught_naming_it(archive: Path, verify: bool) -> None:
    for name in files_of(archive):
        path = archive / name
        original = path.read_bytes()
        flip_byte(path)
        problems = check_files(archive, load(archive), verify=verify)
        assert [(p.path, p.rule) for p in problems] == [(name, "manifest-sha256")]
        with pytest.raises(LoadError, match=re.escape(f"{archive}: {name}: sha256 ")):
            load_state_from_file(archive, verify=verify)
        path.write_bytes(original)
    assert check_files(archive, load(archive), verify=True) == []


def test_a_flipped_checksum_in_the_manifest_names_its_file(archive: Path) -> None:
    text = (archive / MANIFEST_FILE_NAME).read_text("utf-8")
    entry = load(archive)["files"][3]
    digit = "0" if entry["sha256"][0] != "0" else "1"
    text = text.replace(entry["sha256"], digit + entry["sha256"][1:])
    (archive / MANIFEST_FILE_NAME).write_text(text, "utf-8")
    assert [p.path for p in check_files(archive, read_manifest(archive))] == [entry["path"]]


def test_by_default_large_files_are_size_checked_only(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(integrity, "HASH_LIMIT", 100)
    state_pt = archive / "model/state.pt"
    flip_byte(state_pt)
    assert check_files(archive, load(archive)) == []
    assert [p.rule for p in check_files(archive, load(archive), verify=True)] == ["manifest-sha256"]
    state_pt.write_bytes(state_pt.read_bytes()[:-1])
    problems = check_files(archive, load(archive))
    assert [(p.path, p.rule) for p in problems] == [("model/state.pt", "manifest-size")]


def test_missing_extra_and_linked_files(archive: Path) -> None:
    (archive / "counter/stash.pkl").unlink()
    (archive / "counter/notes.txt").write_text("hello")
    (archive / "model/link").symlink_to(archive / "version.txt")
    os.mkfifo(archive / "fifo")
    problems = {(p.path, p.rule) for p in check_files(archive, load(archive))}
    assert problems == {
        ("counter/stash.pkl", "manifest-files"),
        ("counter/notes.txt", "manifest-files"),
        ("model/link", "manifest-files"),
        ("fifo", "manifest-files"),
    }
    (archive / "version.txt").unlink()
    (archive / "version.txt").symlink_to(archive / "source.py")
    assert ("version.txt", "links") in {
        (p.path, p.rule) for p in check_files(archive, load(archive))
    }


def test_without_a_manifest_the_archive_is_incomplete(archive: Path) -> None:
    (archive / MANIFEST_FILE_NAME).unlink()
    with pytest.raises(LoadError, match=r"manifest\.json: missing, so the archive is incomplete"):
        load_state_from_file(archive)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (b"{", "not valid JSON"),
        (b"\xff{}", "not valid JSON"),
        (b'{"size": NaN}', "not valid JSON"),
        (b"[]", "holds a JSON list, not an object"),
    ],
)
def test_a_manifest_that_is_not_json_is_named(archive: Path, text: bytes, error: str) -> None:
    (archive / MANIFEST_FILE_NAME).write_bytes(text)
    with pytest.raises(LoadError, match=re.escape(f"{archive}/manifest.json: {error}")):
        read_manifest(archive)


def test_every_schema_violation_is_listed(archive: Path) -> None:
    document = load(archive)
    del document["created"]
    document["files"][0]["sha256"] = "xyz"
    document["nodes"][1]["extra"] = 1
    (archive / MANIFEST_FILE_NAME).write_text(json.dumps(document), "utf-8")
    with pytest.raises(LoadError) as raised:
        read_manifest(archive)
    message = str(raised.value)
    assert message.startswith(f"{archive}/manifest.json: does not follow schema 2.0.json (3 ")
    assert "'created' is a required property" in message
    assert "files/0/sha256: 'xyz' does not match" in message
    assert "nodes/1: Additional properties are not allowed ('extra' was unexpected)" in message


def _set(path: str, value: Any) -> Any:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = document
        for part in parents:
            target = target[int(part) if part.isdigit() else part]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return change


_DELETE = object()
MANIFEST_VIOLATIONS = {
    **{
        f"missing {field}": _set(field, _DELETE)
        for field in (
            "format",
            "protocol",
            "revision",
            "writer",
            "created",
            "original_revision",
            "keep_vars",
            "directories",
            "nodes",
            "files",
            "trusted_decoding_required",
            "unsafe_globals",
        )
    },
    "missing node keys": _set("nodes/0/keys", _DELETE),
    "missing file sha256": _set("files/0/sha256", _DELETE),
    "bad sha256": _set("files/0/sha256", "ABCDEF" + "0" * 58),
    "short sha256": _set("files/0/sha256", "0" * 63),
    "wrong protocol": _set("protocol", 1),
    "wrong format": _set("format", "flambe"),
    "wrong revision": _set("revision", "1.4"),
    "bad original revision": _set("original_revision", "v1"),
    "created without Z": _set("created", "2024-01-01T00:00:00+00:00"),
    "additional property": _set("signature", "x"),
    "additional writer property": _set("writer/url", "x"),
    "additional node property": _set("nodes/0/path", "x"),
    "additional file property": _set("files/0/mode", 420),
    "additional tensor property": _set("nodes/2/tensors/proj.weight/device", "cpu"),
    "negative size": _set("files/0/size", -1),
    "path traversal": _set("files/0/path", "../etc/passwd"),
    "absolute path": _set("files/0/path", "/etc/passwd"),
    "bad prefix": _set("nodes/1/prefix", "model..x"),
    "bad version": _set("nodes/1/version", "latest"),
    "no root directory": _set("directories", ["model"]),
    "no nodes": _set("nodes", []),
    "trusted but nothing unsafe": _set("trusted_decoding_required", True),
    "unsafe but not trusted": _set("unsafe_globals", ["os.system"]),
}


@pytest.mark.parametrize("change", MANIFEST_VIOLATIONS.values(), ids=MANIFEST_VIOLATIONS.keys())
def test_the_manifest_schema_rejects(archive: Path, change: Any) -> None:
    document = load(archive)
    change(document)
    assert list(validator("2.0.json").iter_errors(document)) != []
    (archive / MANIFEST_FILE_NAME).write_text(json.dumps(document), "utf-8")
    with pytest.raises(LoadError, match=r"manifest\.json: does not follow schema 2\.0\.json"):
        read_manifest(archive)


def test_an_upgraded_archive_records_its_original_revision(tmp_path: Path) -> None:
    root = write_protocol2(make_state(), tmp_path / "m", original_revision="1.0")
    assert read_manifest(root)["original_revision"] == "1.0"


@pytest.fixture
def payload(tmp_path: Path) -> dict[str, Any]:
    path = write_protocol2(wrapper_state(), tmp_path / "m", pickle_only=True)
    value: dict[str, Any] = torch.load(path, weights_only=True)
    return value


PICKLE_VIOLATIONS = {
    "missing header": _set("flambe_compat", _DELETE),
    "missing header field": _set("flambe_compat/created", _DELETE),
    "wrong protocol": _set("flambe_compat/protocol", 1),
    "additional header property": _set("flambe_compat/extra", 1),
    "additional property": _set("manifest", {}),
    "missing state": _set("state", _DELETE),
    "state not a mapping": _set("state", [1, 2]),
    "missing directories": _set("metadata/_flambe_directories", _DELETE),
    "missing keep_vars": _set("metadata/keep_vars", _DELETE),
    "component without source": _set("metadata/model/_flambe_source", _DELETE),
    "bad class version": _set("metadata/model/_flambe_version", "two"),
    "bad torch version": _set("metadata/model/version", "1"),
    "bad prefix": _set("metadata/a..b", {}),
}


def test_the_pickle_payload_follows_its_schema(payload: dict[str, Any], tmp_path: Path) -> None:
    directories = sorted(payload["metadata"]["_flambe_directories"])
    view = {
        **payload,
        "state": dict.fromkeys(payload["state"]),
        "metadata": {**payload["metadata"], "_flambe_directories": directories},
    }
    assert list(validator("pickle-2.0.json").iter_errors(view)) == []
    assert list(state_from_payload(payload, tmp_path / "m.pkl")) == list(payload["state"])


@pytest.mark.parametrize("change", PICKLE_VIOLATIONS.values(), ids=PICKLE_VIOLATIONS.keys())
def test_the_pickle_schema_rejects(payload: dict[str, Any], change: Any) -> None:
    broken = copy.deepcopy(payload)
    change(broken)
    with pytest.raises(LoadError, match=r"m\.pkl: does not follow schema pickle-2\.0\.json"):
        state_from_payload(broken, Path("m.pkl"))


def test_a_pickle_that_is_not_a_payload(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="holds a list, not a protocol 2 pickle"):
        state_from_payload([1], tmp_path / "m.pkl")


def test_unsafe_globals_follow_the_allow_list() -> None:
    names = {"torch.FloatStorage", "torch._utils._rebuild_tensor_v2", "collections.OrderedDict"}
    assert unsafe_globals(names) == []
    assert unsafe_globals({*names, "datetime.datetime", "torch.NotAStorage"}) == [
        "datetime.datetime",
        "torch.NotAStorage",
    ]


def test_plain_states_need_no_trust(archive: Path) -> None:
    document = load(archive)
    assert document["trusted_decoding_required"] is False
    assert document["unsafe_globals"] == []


@pytest.mark.parametrize(
    ("stash", "value", "unsafe"),
    [
        ({"when": datetime.datetime(2020, 1, 1)}, None, ["datetime.datetime"]),
        (None, Point(3), [f"{__name__}.Point"]),
    ],
    ids=["stash", "state"],
)
def test_a_global_outside_the_allow_list_requires_trust(
    tmp_path: Path, stash: Any, value: Any, unsafe: list[str]
) -> None:
    state = make_state(nodes=2, stash=stash)
    if value is not None:
        state["child0.point"] = value
    document = read_manifest(write_protocol2(state, tmp_path / "m"))
    assert document["trusted_decoding_required"] is True
    assert document["unsafe_globals"] == unsafe

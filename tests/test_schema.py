"""The JSON Schemas themselves: well-formed, accepting every real archive, enforcing each rule."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from jsonschema import Draft202012Validator

from flambe_compat.cli import main
from flambe_compat.container import opened
from flambe_compat.describe import describe
from flambe_compat.detect import detect
from flambe_compat.layout import NODE_FILES
from flambe_compat.schema import load_schema, schema_name, schema_problems
from tests.corpus import CORPUS, CorpusArchive, archives, expected_revision

ARCHIVES = list(archives())
SCHEMA_FOLDER = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA_FILES = sorted(path.name for path in SCHEMA_FOLDER.glob("*.json"))
FOLDER_REVISIONS = ("1.0", "1.1", "1.2", "1.3", "1.4")
P1 = "protocol-1.json#/$defs"

Document = dict[str, Any]
Mutation = Callable[[Document], None]


@functools.cache
def _document(name: str) -> Document:
    with opened(CORPUS / name) as archive:
        description = describe(archive, detect(archive))
        document, problems = description.as_json(), description.problems
    assert problems == []
    return document


def document_of(name: str) -> Document:
    """A fresh copy of the described document of the corpus archive `name`."""
    return copy.deepcopy(_document(name))


def good_document(revision: str) -> Document:
    """A valid document of `revision` with four nodes: '', counter, model, model/inner."""
    if revision == "1.1":  # a 1.1 folder is a 1.2 one; only whole-path tar members tell
        document = document_of("0.4.6-legacy/wrapper-tgz.tar.gz")
        return {**document, "revision": "1.1", "member_prefix": "home/user/wrapper-tgz"}
    return document_of(
        {
            "1.0": "0.4.3-legacy/wrapper-dir",
            "1.2": "0.4.11-legacy/wrapper-tgz.tar.gz",
            "1.3": "0.4.13-legacy/wrapper-dir",
            "1.4": "0.4.18-zip/wrapper-dir",
        }[revision]
    )


def rule_location(rule: str) -> str:
    """The schema keyword a problem's rule points at, as `file#/pointer`, through `$ref`s."""
    name, _, pointer = rule.partition("#/")
    location = _locate(name, load_schema(name), pointer.split("/"), [])
    assert location is not None, f"{rule} points at nothing"
    return location


def _locate(name: str, node: Any, parts: list[str], trail: list[str]) -> str | None:
    """Follow `parts` from `node`; jsonschema's paths leave `$ref` out, so take it when needed."""
    if not parts:
        return f"{name}#/{'/'.join(trail)}"
    head, rest = parts[0], parts[1:]
    found = None
    if isinstance(node, list) and head.isdigit() and int(head) < len(node):
        found = _locate(name, node[int(head)], rest, [*trail, head])
    elif isinstance(node, dict) and head in node:
        found = _locate(name, node[head], rest, [*trail, head])
    if found is None and isinstance(node, dict) and "$ref" in node:
        target_name, _, target_pointer = node["$ref"].partition("#/")
        target_name = target_name or name
        target: Any = load_schema(target_name)
        for part in target_pointer.split("/"):
            target = target[part]
        found = _locate(target_name, target, parts, target_pointer.split("/"))
    return found


def located(document: Document, schema: str) -> list[tuple[str, str]]:
    """(rule location, file) of each problem of `document` under `schema`."""
    return [(rule_location(p.rule), p.path) for p in schema_problems(document, schema)]


# The schema files themselves


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_file_is_a_documented_draft_2020_12_schema(name: str) -> None:
    schema = json.loads((SCHEMA_FOLDER / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/schemas/" + name)
    assert schema["title"].strip()
    assert schema["description"].strip()


def test_every_revision_has_its_schema() -> None:
    assert {f"{revision}.json" for revision in FOLDER_REVISIONS} | {
        "protocol-1.json",
        "pickle-1.json",
        "validate-report.json",
    } <= set(SCHEMA_FILES)


# Every real archive is accepted by the schema of its revision


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda a: a.id)
def test_corpus_archive_follows_its_revision_schema(archive: CorpusArchive) -> None:
    document = document_of(archive.id)
    name = schema_name(document)
    expected = "pickle-1.json" if archive.layout == "pickle" else f"{document['revision']}.json"
    assert name == expected
    assert document["revision"] == expected_revision(archive)
    assert schema_problems(document, name) == []


@pytest.mark.parametrize(
    "archive", [a for a in ARCHIVES if a.layout == "folder"], ids=lambda a: a.id
)
def test_revision_schemas_tell_revisions_apart(archive: CorpusArchive) -> None:
    """Judged as another revision, an archive is refused, but a 1.2 one passes as 1.1."""
    revision = document_of(archive.id)["revision"]
    for other in FOLDER_REVISIONS:
        if other == revision:
            continue
        document = {**document_of(archive.id), "revision": other}
        accepted = not schema_problems(document, f"{other}.json")
        assert accepted == ((revision, other) == ("1.2", "1.1")), other


# Each rule of each schema, broken alone


def delete(*path: Any) -> Mutation:
    """A mutation removing the item at `path`."""

    def mutate(document: Document) -> None:
        target = document
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


def put(*path: Any, value: Any) -> Mutation:
    """A mutation setting the item at `path` to `value`."""

    def mutate(document: Document) -> None:
        target = document
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = copy.deepcopy(value)

    return mutate


def empty_state(document: Document) -> None:
    """model/state.pt as describe reports an empty file."""
    document["nodes"][2]["files"]["state.pt"]["size"] = 0
    document["nodes"][2]["state"] = None


def drop_root_directory(document: Document) -> None:
    """The root prefix '' left out of the recorded `_flambe_directories`."""
    document["nodes"][0]["state"]["metadata"]["_flambe_directories"].remove("")


class Rule(NamedTuple):
    """A rule broken alone: how, where the problem's rule points, the file it names."""

    what: str
    mutation: Mutation
    location: str
    path: str
    revisions: tuple[str, ...] = FOLDER_REVISIONS


NODE = f"{P1}/node/properties"
WITH_METADATA = f"{P1}/withMetadata/properties/state/else/properties/metadata"
ROOT_METADATA = f"{P1}/rootMetadata/properties/state/properties/metadata"
NODE_METADATA = {"_flambe_version": "0.0.0", "_flambe_class": "Counter", "_flambe_source": ""}
BAD_VERSION_FILES = ("Counter", "Counter:", ":0.0.0", "Counter: 0.0.0", "a:b:c", "")
FROM_13, FROM_12 = ("1.3", "1.4"), ("1.2", "1.3", "1.4")
BEFORE_13, BEFORE_14 = ("1.0", "1.1", "1.2"), ("1.0", "1.1", "1.2", "1.3")

FOLDER_RULES = [
    *(
        Rule(
            f"no model/{name}",
            delete("nodes", 2, "files", name),
            f"{NODE}/files/required",
            f"model/{name}",
        )
        for name in NODE_FILES
    ),
    Rule(
        "no root state.pt",
        delete("nodes", 0, "files", "state.pt"),
        f"{NODE}/files/required",
        "state.pt",
    ),
    Rule(
        "empty state.pt",
        empty_state,
        f"{P1}/nonEmptyFile/properties/size/minimum",
        "model/state.pt",
    ),
    Rule(
        "empty version.txt",
        put("nodes", 1, "files", "version.txt", "size", value=0),
        f"{P1}/nonEmptyFile/properties/size/minimum",
        "counter/version.txt",
    ),
    Rule(
        "protocol_version 2",
        put("nodes", 1, "protocol_version", value="2"),
        f"{NODE}/protocol_version/enum",
        "counter/protocol_version.txt",
    ),
    *(
        Rule(
            f"version.txt {text!r}",
            put("nodes", 1, "version_file", value=text),
            f"{NODE}/version_file/pattern",
            "counter/version.txt",
        )
        for text in BAD_VERSION_FILES
    ),
    Rule(
        "config of 3 documents",
        put("nodes", 1, "config", "documents", value=3),
        f"{NODE}/config/properties/documents/maximum",
        "counter/config.yaml",
    ),
    Rule(
        "state format pickle",
        put("nodes", 1, "state", "format", value="pickle"),
        f"{P1}/torchPayload/properties/format/enum",
        "counter/state.pt",
    ),
    Rule(
        "state type list",
        put("nodes", 1, "state", "type", value="list"),
        f"{P1}/stateDict/properties/type/enum",
        "counter/state.pt",
    ),
    Rule(
        "stash type list",
        put("nodes", 1, "stash", "type", value="list"),
        f"{NODE}/stash/anyOf/1/properties/type/const",
        "counter/stash.pkl",
    ),
    Rule(
        "torch stash",
        put("nodes", 1, "stash", "format", value="legacy"),
        f"{P1}/rawStash/properties/stash/properties/format/const",
        "counter/stash.pkl",
        ("1.0",),
    ),
    Rule(
        "raw stash",
        put("nodes", 1, "stash", "format", value="pickle"),
        f"{P1}/torchPayload/properties/format/enum",
        "counter/stash.pkl",
        ("1.1", *FROM_12),
    ),
    Rule(
        "metadata",
        put("nodes", 1, "state", "metadata", value={"": NODE_METADATA}),
        f"{P1}/withoutMetadata/properties/state/properties/metadata/type",
        "counter/state.pt",
        BEFORE_13,
    ),
    Rule(
        "no metadata",
        put("nodes", 1, "state", "metadata", value=None),
        f"{WITH_METADATA}/type",
        "counter/state.pt",
        FROM_13,
    ),
    Rule(
        "no own metadata",
        delete("nodes", 1, "state", "metadata", ""),
        f"{WITH_METADATA}/required",
        "counter/state.pt",
        FROM_13,
    ),
    Rule(
        "no class",
        delete("nodes", 1, "state", "metadata", "", "_flambe_class"),
        f"{P1}/nodeMetadata/required",
        "counter/state.pt",
        FROM_13,
    ),
    Rule(
        "empty class",
        put("nodes", 1, "state", "metadata", "", "_flambe_class", value=""),
        f"{P1}/nodeMetadata/properties/_flambe_class/minLength",
        "counter/state.pt",
        FROM_13,
    ),
    Rule(
        "keep_vars without _flambe_directories",
        delete("nodes", 0, "state", "metadata", "_flambe_directories"),
        f"{ROOT_METADATA}/dependentRequired",
        "state.pt",
        FROM_13,
    ),
    Rule(
        "_flambe_directories without keep_vars",
        delete("nodes", 0, "state", "metadata", "keep_vars"),
        f"{ROOT_METADATA}/dependentRequired",
        "state.pt",
        FROM_13,
    ),
    Rule(
        "keep_vars not bool",
        put("nodes", 0, "state", "metadata", "keep_vars", value="no"),
        f"{ROOT_METADATA}/properties/keep_vars/type",
        "state.pt",
        FROM_13,
    ),
    Rule(
        "'' not a directory",
        drop_root_directory,
        f"{ROOT_METADATA}/properties/_flambe_directories/contains",
        "state.pt",
        FROM_13,
    ),
    Rule(
        "a directory twice",
        put("nodes", 0, "state", "metadata", "_flambe_directories", value=["", "a", "a"]),
        f"{ROOT_METADATA}/properties/_flambe_directories/uniqueItems",
        "state.pt",
        FROM_13,
    ),
    Rule(
        "requirements.txt",
        put("nodes", 0, "files", "requirements.txt", value={"size": 9}),
        f"{P1}/withoutRequirements/properties/files/not",
        "requirements.txt",
        BEFORE_14,
    ),
    Rule(
        "no requirements.txt",
        delete("nodes", 0, "files", "requirements.txt"),
        f"{P1}/withRequirements/properties/files/required",
        "requirements.txt",
        ("1.4",),
    ),
    Rule(
        "whole-path tar members",
        put("member_prefix", value="home/user/m"),
        f"{P1}/basenameMembers/properties/member_prefix/pattern",
        "",
        FROM_12,
    ),
    Rule(
        "layout pickle", put("layout", value="pickle"), f"{P1}/archive/properties/layout/const", ""
    ),
    Rule(
        "container pickle",
        put("container", value="pickle"),
        f"{P1}/archive/properties/container/enum",
        "",
    ),
    Rule("protocol 2", put("protocol", value=2), f"{P1}/archive/properties/protocol/const", ""),
    Rule("no nodes", put("nodes", value=[]), f"{P1}/archive/properties/nodes/minItems", ""),
    Rule(
        "root node not first",
        put("nodes", 0, "folder", value="x"),
        f"{P1}/archive/properties/nodes/prefixItems/0/properties/folder/const",
        "x",
    ),
]


@pytest.mark.parametrize(
    ("revision", "rule"),
    [
        pytest.param(revision, rule, id=f"{revision}: {rule.what}")
        for rule in FOLDER_RULES
        for revision in rule.revisions
    ],
)
def test_each_folder_rule(revision: str, rule: Rule) -> None:
    document = good_document(revision)
    rule.mutation(document)
    assert located(document, f"{revision}.json") == [(rule.location, rule.path)]


@pytest.mark.parametrize("revision", FOLDER_REVISIONS)
def test_the_unbroken_documents_are_valid(revision: str) -> None:
    assert schema_problems(good_document(revision), f"{revision}.json") == []


@pytest.mark.parametrize("revision", FOLDER_REVISIONS)
def test_the_revision_rule(revision: str) -> None:
    document = {**good_document(revision), "revision": "1.5"}
    assert located(document, f"{revision}.json") == [
        (f"{revision}.json#/properties/revision/const", "")
    ]


@pytest.mark.parametrize("revision", ["1.0", "1.1"])
def test_whole_path_members_are_fine_before_12(revision: str) -> None:
    document = {**good_document(revision), "member_prefix": "home/user/models/m"}
    assert schema_problems(document, f"{revision}.json") == []


def test_several_broken_rules_are_all_reported() -> None:
    document = good_document("1.4")
    delete("nodes", 2, "files", "source.py")(document)
    put("nodes", 3, "protocol_version", value="abc")(document)
    delete("nodes", 0, "files", "requirements.txt")(document)
    assert sorted(path for _, path in located(document, "1.4.json")) == [
        "model/inner/protocol_version.txt",
        "model/source.py",
        "requirements.txt",
    ]


PICKLE_STATE = "pickle-1.json#/properties/state/properties"
PICKLE_RULES = [
    Rule(
        "no _flambe_directories",
        delete("state", "metadata", "_flambe_directories"),
        f"{PICKLE_STATE}/metadata/required",
        "mlp-pkl.pkl",
    ),
    Rule(
        "no root metadata",
        delete("state", "metadata", ""),
        f"{PICKLE_STATE}/metadata/required",
        "mlp-pkl.pkl",
    ),
    Rule(
        "'' not a directory",
        put("state", "metadata", "_flambe_directories", value=["model"]),
        f"{PICKLE_STATE}/metadata/properties/_flambe_directories/contains",
        "mlp-pkl.pkl",
    ),
    Rule(
        "keep_vars not bool",
        put("state", "metadata", "keep_vars", value=0),
        f"{PICKLE_STATE}/metadata/properties/keep_vars/type",
        "mlp-pkl.pkl",
    ),
    Rule(
        "no class",
        delete("state", "metadata", "", "_flambe_class"),
        f"{P1}/nodeMetadata/required",
        "mlp-pkl.pkl",
    ),
    Rule(
        "no metadata",
        put("state", "metadata", value=None),
        f"{PICKLE_STATE}/metadata/type",
        "mlp-pkl.pkl",
    ),
    Rule(
        "type dict", put("state", "type", value="dict"), f"{PICKLE_STATE}/type/enum", "mlp-pkl.pkl"
    ),
    Rule(
        "no type",
        delete("state", "type"),
        "pickle-1.json#/properties/state/required",
        "mlp-pkl.pkl",
    ),
    Rule(
        "no keys",
        delete("state", "keys"),
        "pickle-1.json#/properties/state/required",
        "mlp-pkl.pkl",
    ),
    *(
        Rule(
            f"format {kind}",
            put("state", "format", value=kind),
            f"{PICKLE_STATE}/format/const",
            "mlp-pkl.pkl",
        )
        for kind in ("legacy", "zip", "unknown")
    ),
    Rule(
        "tensor without shape",
        delete("state", "tensors", "net.0.weight", "shape"),
        f"{P1}/tensor/required",
        "mlp-pkl.pkl",
    ),
    Rule(
        "empty file",
        put("file", "size", value=0),
        "pickle-1.json#/properties/file/properties/size/minimum",
        "mlp-pkl.pkl",
    ),
    Rule("no state", delete("state"), "pickle-1.json#/required", ""),
    Rule(
        "layout folder", put("layout", value="folder"), "pickle-1.json#/properties/layout/const", ""
    ),
    Rule(
        "container directory",
        put("container", value="folder"),
        "pickle-1.json#/properties/container/enum",
        "",
    ),
    Rule("protocol 2", put("protocol", value=2), "pickle-1.json#/properties/protocol/const", ""),
    Rule(
        "revision 2.0", put("revision", value="2.0"), "pickle-1.json#/properties/revision/enum", ""
    ),
]


@pytest.mark.parametrize("rule", PICKLE_RULES, ids=lambda rule: rule.what)
def test_each_pickle_rule(rule: Rule) -> None:
    document = document_of("0.4.18-legacy/mlp-pkl.pkl")
    rule.mutation(document)
    assert located(document, "pickle-1.json") == [(rule.location, rule.path)]


def test_problems_name_the_file_and_the_field() -> None:
    document = good_document("1.3")
    put("nodes", 3, "state", "format", value="pickle")(document)
    (problem,) = schema_problems(document, "1.3.json")
    assert problem.path == "model/inner/state.pt"
    assert problem.message.startswith("nodes/3/state/format: 'pickle' is not one of")
    assert problem.rule.startswith("1.3.json#/properties/nodes/items/")


# The report of `flambe-compat validate --json`


def test_the_report_schema_accepts_validate_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.pkl").write_bytes(b"\x80\x02garbage")
    paths = [str(a.path) for a in ARCHIVES if a.graph == "wrapper" and a.release == "0.4.18"]
    assert main(["validate", "--json", "--strict", *paths, str(tmp_path / "broken.pkl")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert schema_problems(report, "validate-report.json") == []
    assert [r["valid"] for r in report["reports"]] == [True] * len(paths) + [False]
    assert report["reports"][-1]["problems"]


def test_the_report_schema_rejects_a_report_without_valid() -> None:
    report = {"valid": True, "archives": 0, "reports": []}
    assert schema_problems(report, "validate-report.json") == []
    del report["valid"]
    (problem,) = schema_problems(report, "validate-report.json")
    assert (problem.rule, problem.message) == (
        "validate-report.json#/required",
        "'valid' is a required property",
    )


def test_the_report_schema_rejects_malformed_reports() -> None:
    entry = {"source": "x", "valid": False, "protocol": None, "revision": None, "nodes": []}
    for report in (
        {"valid": False, "archives": 1, "reports": [entry]},
        {"valid": False, "archives": 1, "reports": [{**entry, "problems": [{"path": ""}]}]},
        {"valid": True, "archives": 0, "reports": [], "verdict": "ok"},
    ):
        assert schema_problems(report, "validate-report.json")

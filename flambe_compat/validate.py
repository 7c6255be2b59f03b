"""Validation: every problem of an archive at once, before any payload is trusted.

`validate(path)` opens the archive, detects its revision, describes it as JSON (peeking
into payloads through the allow-list, reading no tensor bytes), checks the document
against the revision's schema, then runs the checks a schema cannot express. It returns
a `Report` and never raises for a bad archive. Loading is built on the same `check`.

>>> report = validate("fixtures/flambe-corpus/0.4.3-legacy/wrapper-tgz.tar.gz")
>>> report.valid, report.protocol, report.revision, report.nodes
(True, 1, '1.0', ['', 'counter', 'model', 'model.inner'])
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from packaging.version import InvalidVersion, Version

from .container import Opened, opened
from .describe import describe
from .detect import Revision, detect
from .errors import LoadError
from .layout import (
    FLAMBE_DIRECTORIES_KEY,
    MANIFEST_FILE_NAME,
    NODE_FILES,
    PICKLE_HEADER_KEY,
    REQUIREMENTS_FILE_NAME,
    VERSION_FILE_NAME,
)
from .manifest import PICKLE_SCHEMA, PROTOCOL_2, check_files, read_manifest
from .problems import Problem
from .schema import schema_name, schema_problems
from .store import StoreError, fetched, is_url, shown
from .tree import component_folders, flambe_component_folders
from .unpickle import Trust

SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
_KNOWN_FILES = {*NODE_FILES, REQUIREMENTS_FILE_NAME, MANIFEST_FILE_NAME}


@dataclass
class Report:
    """The verdict on one archive: what it is, and every problem found."""

    source: str
    container: str | None = None
    layout: Literal["folder", "pickle"] | None = None
    protocol: int | None = None
    revision: Revision | None = None
    nodes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    document: dict[str, Any] | None = field(default=None, repr=False)
    plain: dict[Path, Any] = field(default_factory=dict, repr=False)
    """Payloads that validation decoded completely (no tensors), for the loader to reuse."""

    @property
    def valid(self) -> bool:
        return not self.problems

    def render(self) -> str:
        """Human-readable lines: a summary, then one line per problem."""
        if self.valid:
            kind = f"{self.layout} in {self.container}" if self.container else ""
            return (
                f"{self.source}: valid (protocol {self.protocol} revision {self.revision}, "
                f"{kind}, {len(self.nodes)} node{'s' * (len(self.nodes) != 1)})"
            )
        lines = [
            f"{self.source}: invalid ({len(self.problems)} problem"
            f"{'s' * (len(self.problems) != 1)})"
        ]
        lines += [f"  {problem.render(self.source)}" for problem in self.problems]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "valid": self.valid,
            "container": self.container,
            "layout": self.layout,
            "protocol": self.protocol,
            "revision": self.revision,
            "nodes": self.nodes,
            "problems": [problem.as_json() for problem in self.problems],
        }

    def raise_for_problems(self) -> None:
        """Raise a `LoadError` listing every problem, if there is any."""
        if self.problems:
            listing = "\n".join(f"  {p.render(self.source)}" for p in self.problems)
            raise LoadError(f"{self.source}: invalid archive\n{listing}")


def validate(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    allow_globals: Iterable[str] = (),
) -> Report:
    """Check the archive at `path` (a local path or a URL); never raises for a bad archive.

    A store that cannot be read (see `flambe_compat.store`) gives a `store` problem.

    `strict` also flags what flambe tolerated: unknown extra files, class versions that
    are not `MAJOR.MINOR.PATCH`, an empty root config (`load()` could not rebuild it).
    Payloads naming globals outside the allow-list (plus `allow_globals`) are problems.
    """
    try:
        with fetched(path) as local, opened(local) as archive:
            report = check(archive, strict=strict, trust=Trust.of(allow_globals))
    except LoadError as error:
        rule = "store" if isinstance(error, StoreError) else "container"
        return Report(shown(path), problems=[Problem("", rule, _after_source(error))])
    if is_url(path):
        report.source = shown(path)
    return report


def check(
    archive: Opened,
    *,
    strict: bool = False,
    trust: Trust | None = None,
    revision: Revision | None = None,
    verify: bool = False,
) -> Report:
    """`validate` of an archive already opened (the load path calls this).

    `revision` judges the archive as that revision instead of the detected one (the
    migration chain checks each step's result against its target revision's schema).
    """
    detection = detect(archive)
    if revision is not None and detection.revision is not None:
        detection = dataclasses.replace(detection, revision=revision)
    report = Report(
        os.fspath(archive.source),
        container=archive.container,
        layout=detection.layout,
        protocol=detection.protocol,
        revision=detection.revision,
    )
    if detection.revision is None:
        report.problems += [Problem("", "revision", reason) for reason in detection.reasons]
        return report
    document, problems = describe(archive, detection, report.plain)
    report.document = document
    report.problems += problems
    if detection.protocol == PROTOCOL_2:
        report.problems += _protocol2_problems(archive, document, verify)
    else:
        report.problems += schema_problems(document, schema_name(document))
    report.problems += _unsafe_globals(document, trust or Trust())
    if detection.layout == "pickle":
        metadata = _mapping(_mapping(document.get("state")).get("metadata"))
        report.nodes = sorted(str(p) for p in metadata.get(FLAMBE_DIRECTORIES_KEY) or [])
    else:
        report.nodes = _folder_prefixes(document, report.problems)
        report.problems += _node_problems(document, strict)
        if strict:
            report.problems += _strict_folder_problems(document)
    return report


def _mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a dict, else `{}`: the checks below also run on documents the
    schema refused, so that every problem is reported at once."""
    return value if isinstance(value, dict) else {}


def _protocol2_problems(archive: Opened, document: dict[str, Any], verify: bool) -> list[Problem]:
    """Protocol 2 describes itself: its manifest (or pickle header) against its schema,
    then every file against the manifest (sizes, and checksums: see `manifest`). The
    manifest read is kept in `document["manifest"]`."""
    if not archive.is_directory:
        payload = document.get("state") or {}
        if payload.get("error"):
            return []  # already reported as undecodable
        view = {
            PICKLE_HEADER_KEY: payload.get("header"),
            "state": dict.fromkeys(payload.get("keys") or []),
            "metadata": payload.get("metadata"),
        }
        return schema_problems(view, PICKLE_SCHEMA)
    try:
        document["manifest"] = read_manifest(archive.payload)
        return check_files(archive.payload, document["manifest"], verify)
    except LoadError as error:
        return [Problem(MANIFEST_FILE_NAME, "manifest", _after_source(error))]


def _after_source(error: LoadError) -> str:
    text = str(error)
    return text.split(": ", 1)[1] if ": " in text else text


def _payloads(document: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    if document["layout"] == "pickle":
        yield document["file"]["name"], document.get("state") or {}
        return
    for node in document["nodes"]:
        for key, name in (("state", "state.pt"), ("stash", "stash.pkl")):
            if isinstance(node.get(key), dict):
                yield "/".join(p for p in (node["folder"], name) if p), node[key]


def _unsafe_globals(document: dict[str, Any], trust: Trust) -> list[Problem]:
    if trust.trusted:
        return []
    return [
        Problem(
            path,
            "allow-list",
            f"names the global {name}, which is not on the allow-list; pass "
            f"allow_globals=[{name!r}] if you trust it, or trusted=True for the whole archive",
        )
        for path, payload in _payloads(document)
        for name in payload.get("unsafe_globals", [])
        if name not in trust.allow_globals
    ]


def _folder_prefixes(document: dict[str, Any], problems: list[Problem]) -> list[str]:
    """The Component prefixes, cross-checked with `_flambe_directories` when recorded."""
    folders = [node["folder"] for node in document["nodes"]]
    root_metadata = _mapping(_mapping(document["nodes"][0].get("state")).get("metadata"))
    recorded = root_metadata.get(FLAMBE_DIRECTORIES_KEY)
    if not isinstance(recorded, list):
        return [folder.replace("/", ".") for folder in folders]
    by_folder: dict[str, str] = {}
    for prefix in recorded:
        if not isinstance(prefix, str):
            continue
        right = "/".join(component_folders(prefix, recorded))
        flambe = "/".join(flambe_component_folders(prefix, recorded))
        folder = right if right in folders else flambe
        if folder in folders:
            by_folder[folder] = prefix
        else:
            problems.append(
                Problem(
                    "state.pt",
                    "directories",
                    f"_flambe_directories lists {prefix!r} but the archive has no folder "
                    f"{right or '.'!r} for it (flambe lost that Component's state when saving)",
                )
            )
    for folder in folders:
        if folder not in by_folder:
            problems.append(
                Problem(folder, "directories", "a folder that _flambe_directories does not list")
            )
    return sorted(by_folder.get(folder, folder.replace("/", ".")) for folder in folders)


def _node_problems(document: dict[str, Any], strict: bool) -> list[Problem]:
    problems = []
    for node in document["nodes"]:
        text = node.get("version_file")
        if not isinstance(text, str) or text.count(":") != 1:
            continue
        path = "/".join(p for p in (node["folder"], VERSION_FILE_NAME) if p)
        class_name, version = text.split(":")
        version = version.strip()
        try:
            Version(version)
        except InvalidVersion:
            problems.append(Problem(path, "version", f"{version[:80]!r} is not a version"))
            continue
        if strict and not SEMVER.match(version):
            problems.append(Problem(path, "strict-semver", f"{version!r} is not MAJOR.MINOR.PATCH"))
        recorded = _mapping(_mapping(node.get("state")).get("metadata")).get("", {})
        if isinstance(recorded, dict) and recorded.get("_flambe_class") not in (None, class_name):
            problems.append(
                Problem(
                    path,
                    "node-metadata",
                    f"names class {class_name!r} but state.pt records "
                    f"{recorded.get('_flambe_class')!r}",
                )
            )
        keys = _mapping(node.get("state")).get("keys") or []
        children = _child_folders(document, node["folder"])
        for key in keys:
            owner = next((c for c in children if key.startswith(c + ".")), None)
            if owner is not None:
                problems.append(
                    Problem(
                        path.replace(VERSION_FILE_NAME, "state.pt"),
                        "key-owner",
                        f"key {key!r} belongs to the child Component folder {owner!r}",
                    )
                )
    return problems


def _child_folders(document: dict[str, Any], folder: str) -> list[str]:
    depth = len(folder.split("/")) if folder else 0
    children = []
    for node in document["nodes"]:
        parts = node["folder"].split("/") if node["folder"] else []
        if len(parts) == depth + 1 and "/".join(parts[:depth]) == folder:
            children.append(parts[-1])
    return children


def _strict_folder_problems(document: dict[str, Any]) -> list[Problem]:
    problems = []
    for node in document["nodes"]:
        for name in sorted(set(node["files"]) - _KNOWN_FILES):
            path = "/".join(p for p in (node["folder"], name) if p)
            problems.append(Problem(path, "strict-extra-file", "a file flambe does not write"))
    root = document["nodes"][0]
    if (root.get("config") or {}).get("empty"):
        problems.append(
            Problem("config.yaml", "strict-config", "empty: load() cannot rebuild the object")
        )
    return problems

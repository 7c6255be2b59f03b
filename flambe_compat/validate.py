"""Validation: every problem of a described archive at once, before any payload is trusted.

The schema of the archive's revision judges its JSON description; then come the checks
a schema cannot express: protocol 2 files against the manifest, globals outside the
allow-list, `_flambe_directories` against the folders, keys in the node that owns them,
class names against the metadata, and with `strict` what flambe tolerated. The checks
work on the typed records of `describe`, and also run on documents the schema refused,
so that every problem is reported at once. `flambe_compat.pipeline` runs them.

>>> from flambe_compat.container import opened
>>> from flambe_compat.describe import describe
>>> from flambe_compat.detect import detect
>>> with opened("fixtures/flambe-corpus/0.4.3-legacy/wrapper-tgz.tar.gz") as archive:
...     validation = validate_description(describe(archive, detect(archive)))
>>> validation.problems, validation.nodes
([], ['', 'counter', 'model', 'model.inner'])
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from .describe import Description, NodeSummary, PayloadSummary
from .errors import LoadError
from .integrity import PICKLE_SCHEMA, check_files, read_manifest
from .layout import (
    CONFIG_FILE_NAME,
    FLAMBE_CLASS_KEY,
    FLAMBE_DIRECTORIES_KEY,
    KEEP_VARS_KEY,
    MANIFEST_FILE_NAME,
    NODE_FILES,
    PICKLE_HEADER_KEY,
    PROTOCOL_2,
    REQUIREMENTS_FILE_NAME,
    STATE_FILE_NAME,
    VERSION_FILE_NAME,
)
from .problems import Problem
from .schema import schema_name, schema_problems
from .tree import component_folders, flambe_component_folders
from .unpickle import Trust

SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
_KNOWN_FILES = {*NODE_FILES, REQUIREMENTS_FILE_NAME, MANIFEST_FILE_NAME}


@dataclass
class Validation:
    """What validation found: the problems, the Component prefixes, the manifest read."""

    problems: list[Problem] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    subtree: bool = False
    """A node folder of a saved tree (`checkpoint/model`), which flambe loaded on its own."""
    manifest: dict[str, Any] | None = None
    """A protocol 2 folder's `manifest.json`, once it passed its schema."""


def validate_description(
    description: Description,
    *,
    strict: bool = False,
    trust: Trust | None = None,
    verify: bool = False,
) -> Validation:
    """Every problem of a described archive (those met describing it included)."""
    validation = Validation(problems=list(description.problems))
    problems = validation.problems
    if description.detection.protocol == PROTOCOL_2:
        problems += _protocol2_problems(description, validation, verify)
    else:  # protocol 1 describes nothing of itself: its schema judges the description
        document = description.as_json()
        problems += schema_problems(document, schema_name(document))
    problems += _unsafe_globals(description.payloads(), trust or Trust())
    if description.pickle is not None:
        metadata = _mapping(description.pickle.metadata)
        validation.nodes = sorted(str(p) for p in metadata.get(FLAMBE_DIRECTORIES_KEY) or [])
    else:
        validation.nodes = _folder_prefixes(description.nodes, problems)
        validation.subtree = _is_subtree(description.nodes)
        problems += _node_problems(description.nodes, strict)
        if strict:
            problems += _strict_folder_problems(description.nodes)
    return validation


def _mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a dict, else `{}`: the checks below also run on documents the
    schema refused, so that every problem is reported at once."""
    return value if isinstance(value, dict) else {}


def _metadata(payload: PayloadSummary | None) -> dict[str, Any]:
    return _mapping(payload.metadata) if payload is not None else {}


def _protocol2_problems(
    description: Description, validation: Validation, verify: bool
) -> list[Problem]:
    """Protocol 2 describes itself: its manifest (or pickle header) against its schema,
    then every file against the manifest (sizes, and checksums: see `integrity`)."""
    payload = description.pickle
    if payload is not None:
        if payload.error:
            return []  # already reported as undecodable
        view = {
            PICKLE_HEADER_KEY: payload.header,
            "state": dict.fromkeys(payload.keys or []),
            "metadata": payload.metadata,
        }
        return schema_problems(view, PICKLE_SCHEMA)
    root = description.opened.payload
    try:
        validation.manifest = read_manifest(root)
        return check_files(
            root, validation.manifest, verify, description.folders, description.digests()
        )
    except LoadError as error:
        return [Problem(MANIFEST_FILE_NAME, "manifest", after_source(error))]


def after_source(error: LoadError) -> str:
    """A `LoadError`'s message without the path it starts with."""
    text = str(error)
    return text.split(": ", 1)[1] if ": " in text else text


def _unsafe_globals(payloads: Iterable[tuple[str, PayloadSummary]], trust: Trust) -> list[Problem]:
    if trust.trusted:
        return []
    return [
        Problem(
            path,
            "allow-list",
            f"names the global {name}, which is not on the allow-list; pass "
            f"allow_globals=[{name!r}] if you trust it, or trusted=True for the whole archive",
        )
        for path, payload in payloads
        for name in payload.unsafe_globals
        if name not in trust.allow_globals
    ]


def _folder_prefixes(nodes: list[NodeSummary], problems: list[Problem]) -> list[str]:
    """The Component prefixes, cross-checked with `_flambe_directories` when recorded."""
    folders = [node.relative for node in nodes]
    recorded = _metadata(nodes[0].state).get(FLAMBE_DIRECTORIES_KEY)
    if not isinstance(recorded, list):
        return [folder.replace("/", ".") for folder in folders]
    present = set(folders)
    by_folder: dict[str, str] = {}
    known = {prefix for prefix in recorded if isinstance(prefix, str)}
    for prefix in recorded:
        if not isinstance(prefix, str):
            continue
        right = "/".join(component_folders(prefix, known))
        flambe = "/".join(flambe_component_folders(prefix, known))
        folder = right if right in present else flambe
        if folder in present:
            by_folder[folder] = prefix
        else:
            problems.append(
                Problem(
                    STATE_FILE_NAME,
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


def _is_subtree(nodes: list[NodeSummary]) -> bool:
    """A folder whose root `state.pt` has flambe 0.4.12's metadata but not the tree's."""
    root_metadata = nodes[0].state.metadata if nodes and nodes[0].state else None
    return isinstance(root_metadata, dict) and not (
        {FLAMBE_DIRECTORIES_KEY, KEEP_VARS_KEY} & root_metadata.keys()
    )


def _node_problems(nodes: list[NodeSummary], strict: bool) -> list[Problem]:
    problems = []
    for node in nodes:
        text = node.version_file
        if not isinstance(text, str) or text.count(":") != 1:
            continue
        path = node.folder.join(VERSION_FILE_NAME)
        class_name, version = text.split(":")
        version = version.strip()
        try:
            Version(version)
        except InvalidVersion:
            problems.append(Problem(path, "version", f"{version[:80]!r} is not a version"))
            continue
        if strict and not SEMVER.match(version):
            problems.append(Problem(path, "strict-semver", f"{version!r} is not MAJOR.MINOR.PATCH"))
        recorded = _metadata(node.state).get("", {})
        if isinstance(recorded, dict) and recorded.get(FLAMBE_CLASS_KEY) not in (None, class_name):
            problems.append(
                Problem(
                    path,
                    "node-metadata",
                    f"names class {class_name!r} but state.pt records "
                    f"{recorded.get(FLAMBE_CLASS_KEY)!r}",
                )
            )
        keys = (node.state.keys if node.state is not None else None) or []
        children = node.folder.subfolders
        for key in keys:
            owner = next((c for c in children if key.startswith(c + ".")), None)
            if owner is not None:
                problems.append(
                    Problem(
                        node.folder.join(STATE_FILE_NAME),
                        "key-owner",
                        f"key {key!r} belongs to the child Component folder {owner!r}",
                    )
                )
    return problems


def _strict_folder_problems(nodes: list[NodeSummary]) -> list[Problem]:
    problems = [
        Problem(node.folder.join(name), "strict-extra-file", "a file flambe does not write")
        for node in nodes
        for name in sorted(set(node.folder.files) - _KNOWN_FILES)
    ]
    root = nodes[0]
    if root.config is not None and root.config.empty:
        problems.append(
            Problem(CONFIG_FILE_NAME, "strict-config", "empty: load() cannot rebuild the object")
        )
    return problems

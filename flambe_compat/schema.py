"""The JSON Schemas of each format revision, and checking documents against them.

Every error is collected with its place in the document (as jsonschema's
`iter_errors` finds them), and turned into a `Problem` naming the file it concerns.
Valid documents, the common case, are recognised by `jsonschema_rs` (compiled, much
faster on large archives); the errors of an invalid one come from `jsonschema`, whose
errors carry the paths and schema pointers the reports are built from.

>>> schema_name({"layout": "folder", "protocol": 1, "revision": "1.4"})
'1.4.json'
>>> [p.rule for p in schema_problems({"layout": "pickle", "protocol": 1}, "pickle-1.json")]
['pickle-1.json#/required', 'pickle-1.json#/required', ...]
"""

from __future__ import annotations

import functools
import json
from collections import deque
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from .layout import (
    CONFIG_FILE_NAME,
    PROTOCOL_VERSION_FILE_NAME,
    STASH_FILE_NAME,
    STATE_FILE_NAME,
    VERSION_FILE_NAME,
)
from .problems import Problem
from .resources import resource_path
from .revisions import info, pickle_schema

if TYPE_CHECKING:  # jsonschema explains invalid documents only: imported then
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError
    from referencing import Registry


@functools.cache
def _schemas() -> dict[str, dict[str, Any]]:
    """Every shipped schema by its `$id`."""
    folder = resource_path("schemas", "protocol-1.json").parent
    schemas = {}
    for path in sorted(folder.glob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        schemas[contents["$id"]] = contents
    return schemas


@functools.cache
def _registry() -> Registry:
    from referencing import Registry, Resource

    return Registry().with_resources(
        (uri, Resource.from_contents(contents)) for uri, contents in _schemas().items()
    )


@functools.cache
def _fast_validator(name: str) -> Any:
    registry = jsonschema_rs.Registry(list(_schemas().items()))
    return jsonschema_rs.Draft202012Validator(load_schema(name), registry=registry)


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema file `name` (e.g. `1.4.json`), parsed."""
    schema: dict[str, Any] = json.loads(resource_path("schemas", name).read_text(encoding="utf-8"))
    return schema


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(name), registry=_registry())


def schema_name(document: dict[str, Any]) -> str:
    """Which schema judges a described archive: its revision's, or the pickle format's."""
    if document.get("layout") == "pickle":
        return pickle_schema(document.get("protocol"))
    return info(document["revision"]).schema


def schema_problems(document: Any, name: str) -> list[Problem]:
    """Every way `document` breaks the schema `name`, each as a `Problem`."""
    if _fast_validator(name).is_valid(document):
        return []
    errors = sorted(_validator(name).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [_problem(document, name, error) for error in _leaves(errors)]


def _leaves(errors: list[ValidationError]) -> list[ValidationError]:
    """The most specific errors: an `anyOf`/`oneOf` error is replaced by its branches' errors."""
    found: list[ValidationError] = []
    queue = deque(errors)
    while queue:
        error = queue.popleft()
        if error.context:
            queue.extend(_fitting_branches(error.context))
        else:
            found.append(error)
    return found


def _fitting_branches(context: list[ValidationError]) -> list[ValidationError]:
    """The errors of the branches whose type fits the value, if any branch's does.

    The `null` branch of `anyOf: [null, {...}]` says nothing about a value that is there.
    """
    misfits = {
        error.relative_schema_path[0]
        for error in context
        if list(error.relative_schema_path)[1:] == ["type"] and not error.relative_path
    }
    return [error for error in context if error.relative_schema_path[0] not in misfits] or context


def _problem(document: Any, name: str, error: ValidationError) -> Problem:
    pointer = "/".join(str(part) for part in error.absolute_schema_path)
    path = _file_of(document, list(error.absolute_path))
    file = _file_named(error) if list(error.absolute_path)[-1:] == ["files"] else None
    if file:
        path = f"{path}/{file}" if path else file
    return Problem(
        path=path,
        rule=f"{name}#/{pointer}",
        message=f"{_field(list(error.absolute_path))}{error.message}",
    )


def _file_named(error: ValidationError) -> str | None:
    """The file a `required` (missing) or `not: {required}` (forbidden) error is about."""
    if error.validator == "required":
        return str(error.message.split("'")[1])  # "'state.pt' is a required property"
    if error.validator == "not" and isinstance(error.validator_value, dict):
        forbidden = error.validator_value.get("required") or []
        return str(forbidden[0]) if forbidden else None
    return None


def _file_of(document: Any, path: list[Any]) -> str:
    """The archive file a document path is about (`nodes/2/files/state.pt` -> `model/state.pt`)."""
    if len(path) >= 2 and path[0] == "nodes" and isinstance(document, dict):
        try:
            folder = document["nodes"][path[1]]["folder"]
        except (KeyError, IndexError, TypeError):
            folder = ""
        name = _FILE_OF_FIELD.get(str(path[2])) if len(path) > 2 else None
        if len(path) > 3 and path[2] == "files":
            name = str(path[3])
        return "/".join(part for part in (folder, name) if part)
    if path and path[0] in ("state", "file") and isinstance(document, dict):
        return str(document.get("file", {}).get("name", ""))
    return ""


def _field(path: list[Any]) -> str:
    return f"{'/'.join(str(p) for p in path)}: " if path else ""


_FILE_OF_FIELD = {
    "state": STATE_FILE_NAME,
    "stash": STASH_FILE_NAME,
    "version_file": VERSION_FILE_NAME,
    "protocol_version": PROTOCOL_VERSION_FILE_NAME,
    "config": CONFIG_FILE_NAME,
}

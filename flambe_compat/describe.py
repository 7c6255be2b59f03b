"""Describing an archive as a JSON document, executing nothing from it.

The document lists the nodes (folders), their files and sizes, the text of
`version.txt` and `protocol_version.txt`, whether each config parses, each payload's
format, keys, tensor shapes and metadata (read through `peek`, so no tensor byte and no
global outside the allow-list is touched). Failures to read a part become `Problem`s
beside the document; the schema of the detected revision then judges the document.

>>> from flambe_compat.container import opened
>>> from flambe_compat.detect import detect
>>> with opened("fixtures/flambe-corpus/0.4.18-zip/counter-dir") as archive:
...     document, problems = describe(archive, detect(archive))
>>> document["nodes"][0]["version_file"], document["nodes"][0]["state"]["keys"], problems
('Counter:0.0.0', ['label', 'count'], [])
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .config import config_documents
from .container import Opened
from .detect import Detection, archive_folders, file_payload_format
from .layout import (
    CONFIG_FILE_NAME,
    PICKLE_HEADER_KEY,
    PROTOCOL_VERSION_FILE_NAME,
    SOURCE_FILE_NAME,
    STASH_FILE_NAME,
    STATE_FILE_NAME,
    VERSION_FILE_NAME,
)
from .peek import Opaque, PeekError, TensorInfo, peek_file
from .problems import Problem

MAX_TEXT_BYTES = 64 << 20
MAX_JSON_DEPTH = 64
_TEXT_FILES = (VERSION_FILE_NAME, PROTOCOL_VERSION_FILE_NAME, SOURCE_FILE_NAME, CONFIG_FILE_NAME)


def describe(
    archive: Opened, detection: Detection, plain: dict[Path, Any] | None = None
) -> tuple[dict[str, Any], list[Problem]]:
    """The JSON document of an opened archive, and the problems met while reading it.

    Payloads that hold no tensor and name no refused global are decoded completely by
    peeking; when `plain` is given they are kept there, by path, for the loader to reuse.
    """
    problems: list[Problem] = []
    document: dict[str, Any] = {
        "layout": detection.layout,
        "container": archive.container,
        "member_prefix": archive.member_prefix or None,
        "protocol": detection.protocol,
        "revision": detection.revision,
    }
    if detection.layout == "pickle":
        payload = archive.payload
        document["file"] = {"name": payload.name, "size": payload.stat().st_size}
        document["state"] = describe_payload(payload, payload.name, problems, plain)
    else:
        document["nodes"] = [
            _describe_node(archive.payload, folder, problems, plain)
            for folder in archive_folders(archive.payload)
        ]
    return document, problems


def _describe_node(
    root: Path, folder: Path, problems: list[Problem], plain: dict[Path, Any] | None
) -> dict[str, Any]:
    relative = folder.relative_to(root).as_posix()
    relative = "" if relative == "." else relative
    files: dict[str, Any] = {}
    links = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            links.append(entry.name)
        elif entry.is_file():
            files[entry.name] = {"size": entry.stat().st_size}
        elif not entry.is_dir():
            links.append(entry.name)
    for name in links:
        problems.append(
            Problem(_join(relative, name), "links", "links and special files are refused")
        )
    node: dict[str, Any] = {"folder": relative, "files": files}
    texts = {
        name: _read_text(folder / name, _join(relative, name), problems)
        for name in _TEXT_FILES
        if name in files
    }
    node["version_file"] = texts.get(VERSION_FILE_NAME)
    node["protocol_version"] = (texts.get(PROTOCOL_VERSION_FILE_NAME) or "").strip() or None
    config = texts.get(CONFIG_FILE_NAME)
    node["config"] = None if config is None else _describe_config(config, relative, problems)
    for name, key in ((STATE_FILE_NAME, "state"), (STASH_FILE_NAME, "stash")):
        present = name in files and files[name]["size"] > 0
        node[key] = (
            describe_payload(folder / name, _join(relative, name), problems, plain)
            if present
            else None
        )
    return node


def describe_payload(
    path: Path, relative: str, problems: list[Problem], plain: dict[Path, Any] | None = None
) -> dict[str, Any]:
    """Format, keys, tensor shapes, metadata and refused globals of one payload file."""
    payload: dict[str, Any] = {"format": file_payload_format(path)}
    try:
        peeked = peek_file(path)
        payload["unsafe_globals"] = peeked.unsafe_globals
        payload.update(_summary(peeked.value))
    except PeekError as error:
        problems.append(Problem(relative, "decode", f"cannot be decoded ({error})"))
        payload["unsafe_globals"] = error.unsafe_globals
        payload["error"] = True
        return payload
    except (ValueError, RecursionError) as error:
        problems.append(Problem(relative, "decode", f"cannot be described ({error})"))
        payload["error"] = True
        return payload
    if plain is not None and not peeked.unsafe_globals and _is_plain(peeked.value):
        plain[path] = peeked.value
    return payload


def _summary(value: Any) -> dict[str, Any]:
    """Type, keys, tensor shapes, value types and metadata of a peeked payload."""
    summary: dict[str, Any] = {}
    metadata = getattr(value, "_metadata", None)
    if isinstance(value, dict) and isinstance(value.get(PICKLE_HEADER_KEY), dict):
        summary["header"] = jsonable(value[PICKLE_HEADER_KEY])
        value, metadata = value.get("state"), value.get("metadata")
    summary["type"] = type(value).__name__
    if isinstance(value, dict):
        summary["keys"] = [str(key) for key in value]
        summary["tensors"] = {
            str(key): jsonable(item) for key, item in value.items() if isinstance(item, TensorInfo)
        }
        summary["value_types"] = {
            str(key): type(item).__name__
            for key, item in value.items()
            if not isinstance(item, TensorInfo)
        }
    summary["metadata"] = None if metadata is None else jsonable(metadata)
    return summary


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Whether peeking decoded `value` completely: no tensor stand-in anywhere in it."""
    if isinstance(value, (TensorInfo, Opaque)) or depth > MAX_JSON_DEPTH:
        return False
    if isinstance(value, dict):
        metadata = getattr(value, "_metadata", {})
        parts: Any = [
            *value.values(),
            *(metadata.values() if isinstance(metadata, dict) else [metadata]),
        ]
    elif isinstance(value, (list, tuple, set, frozenset)):
        parts = value
    else:
        return True
    return all(_is_plain(part, depth + 1) for part in parts)


def _describe_config(text: str, relative: str, problems: list[Problem]) -> dict[str, Any]:
    try:
        documents = config_documents(text)
    except ValueError as error:
        problems.append(Problem(_join(relative, CONFIG_FILE_NAME), "config", str(error)))
        return {"documents": None}
    return {"documents": documents, "empty": not text.strip()}


def _read_text(path: Path, relative: str, problems: list[Problem]) -> str | None:
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            problems.append(Problem(relative, "text", f"larger than {MAX_TEXT_BYTES} bytes"))
            return None
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        problems.append(
            Problem(relative, "text", f"not UTF-8 text ({error.reason} at byte {error.start})")
        )
    except OSError as error:
        problems.append(Problem(relative, "text", f"cannot be read ({error.strerror})"))
    return None


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe rendering of decoded data: sets sorted, tensors as dtype and shape."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, TensorInfo):
        return {"dtype": value.dtype, "shape": list(value.shape)}
    if isinstance(value, Opaque):
        return {"opaque": value.qualified_name}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v, depth + 1) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value]
    return {"repr": repr(value)[:200]}

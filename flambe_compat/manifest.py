"""Protocol 2's self-description: `manifest.json` of a save folder, the header of a pickle.

A protocol 2 folder is a protocol 1 folder (with `protocol_version.txt` = `2`, payloads
in torch's zip format) plus `manifest.json` at its root, written last: an archive without
it is incomplete. The manifest follows `schemas/2.0.json`: writer, creation time, every
node (class, semver, config, keys, tensor dtypes and shapes), every other file with its
size and sha256, and whether a payload names a global outside the allow-list
(`trusted_decoding_required`, `unsafe_globals`; found by `pickle_globals`, which reads
pickle opcodes and unpickles nothing).

Integrity (`check_archive`, `check_files`): by default every file's size is compared with
the manifest, every file of at most `HASH_LIMIT` (16 MiB) is hashed, and files missing
from the archive or absent from the manifest are reported. So a flipped byte is caught in
every file but a payload larger than 16 MiB, whose tensor bytes `torch.load(mmap=True)`
should not have to read up front (torch checks no CRC of them either); `verify=True`
hashes those too: a full read. A flip inside `manifest.json` itself is caught when it
breaks the JSON, the schema, or a listed size or checksum. sha256 runs at about
1.5 GB/s per core (1.3 GB/s from the page cache); files over 1 MiB are hashed on all cores.

A pickle-only protocol 2 archive holds `pickle_payload(state)`: `{"flambe_compat": header,
"state": ..., "metadata": ...}`; `state_from_payload` checks it against
`schemas/pickle-2.0.json` and turns it back into a `State`.

>>> sorted(pickle_globals(b"\\x80\\x02cbuiltins\\nprint\\nq\\x00."))
['builtins.print']
"""

from __future__ import annotations

import hashlib
import json
import os
import pickletools
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from stat import S_ISREG
from typing import Any

import torch

from .describe import jsonable
from .detect import archive_folders
from .errors import LoadError
from .layout import (
    FLAMBE_DIRECTORIES_KEY,
    KEEP_VARS_KEY,
    MANIFEST_FILE_NAME,
    PICKLE_HEADER_KEY,
    STATE_DICT_DELIMETER,
)
from .problems import Problem
from .schema import schema_problems
from .state import State
from .tree import SaveTreeNode, _traverse_all_nodes
from .unpickle import allowed_globals, python3_name

FORMAT = "flambe-compat"
PROTOCOL_2 = 2
REVISION = "2.0"
MANIFEST_SCHEMA = "2.0.json"
PICKLE_SCHEMA = "pickle-2.0.json"
HASH_LIMIT = 16 << 20
"""Files larger than this are only size-checked unless `verify=True`."""
MAX_MANIFEST_BYTES = 256 << 20
_CHUNK = 1 << 20
_UNKNOWN = object()
"""A stack or memo value the opcode scanner does not track."""
_STRING_OPCODES = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}


def header(original_revision: str | None = None) -> dict[str, Any]:
    """What every protocol 2 archive says about itself (`$defs/header` of the schema)."""
    from . import __version__  # the package imports this module while it initialises

    created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return {
        "format": FORMAT,
        "protocol": PROTOCOL_2,
        "revision": REVISION,
        "writer": {"name": FORMAT, "version": __version__},
        "created": created.replace("+00:00", "Z"),
        "original_revision": original_revision,
    }


def build_manifest(
    tree: SaveTreeNode,
    files: Mapping[str, tuple[int, str]],
    named_globals: Iterable[str],
    original_revision: str | None = None,
) -> dict[str, Any]:
    """The manifest of a save folder written from `tree`, given by its writer: every file
    but the manifest (POSIX path -> size and sha256, as written) and the globals its
    payloads' pickles name (`pickle_globals`).

    Nodes are listed by folder path, so parents come first and the order is stable.
    """
    nodes = [
        _describe_node(path, node)
        for path, node in sorted(_traverse_all_nodes(tree), key=lambda item: item[0])
    ]
    unsafe = unsafe_globals(named_globals)
    return {
        **header(original_revision),
        "keep_vars": bool(getattr(tree.state, "_metadata", {}).get(KEEP_VARS_KEY, False)),
        "directories": sorted(node["prefix"] for node in nodes),
        "nodes": nodes,
        "files": [
            {"path": path, "size": size, "sha256": digest}
            for path, (size, digest) in sorted(files.items())
        ],
        "trusted_decoding_required": bool(unsafe),
        "unsafe_globals": unsafe,
    }


def _describe_node(path: list[str], node: SaveTreeNode) -> dict[str, Any]:
    return {
        "prefix": STATE_DICT_DELIMETER.join(path),
        "folder": "/".join(path),
        "class": node.class_name,
        "version": node.version,
        "config": node.config,
        "keys": list(node.state),
        "tensors": {
            key: {
                "dtype": str(value.dtype).removeprefix("torch."),
                "shape": list(value.shape),
                "nbytes": value.numel() * value.element_size(),
            }
            for key, value in node.state.items()
            if isinstance(value, torch.Tensor)
        },
    }


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest.json`, the archive's commit marker: UTF-8 JSON with sorted keys,
    one line per top-level key and one per item of a top-level list (each node, each
    file). Readable, and written by json's C encoder, which `indent` would turn off."""
    path = root / MANIFEST_FILE_NAME
    path.write_text(manifest_text(manifest), encoding="utf-8")
    return path


def manifest_text(manifest: dict[str, Any]) -> str:
    """The text of `manifest.json` (see `write_manifest`).

    >>> print(manifest_text({"b": [1, {"y": 2, "x": 1}], "a": {"k": []}}), end="")
    {
     "a": {"k": []},
     "b": [
      1,
      {"x": 1, "y": 2}
     ]
    }
    """

    def encode(value: Any) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)

    lines = []
    for key, value in sorted(manifest.items()):
        if isinstance(value, list) and value:
            items = ",\n".join(f"  {encode(item)}" for item in value)
            lines.append(f" {encode(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {encode(key)}: {encode(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the folder `root`, checked against `schemas/2.0.json`.

    Raises `LoadError` naming `manifest.json` when it is missing (an incomplete
    archive), not JSON, or breaks the schema (every broken rule is listed).
    """
    path = root / MANIFEST_FILE_NAME
    try:
        if path.is_symlink() or not path.is_file():
            raise LoadError(
                f"{path}: missing, so the archive is incomplete (protocol 2 "
                "writes manifest.json last, as its commit marker)"
            )
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise LoadError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
        manifest = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise LoadError(f"{path}: not valid JSON ({error})") from None
    except OSError as error:
        raise LoadError(f"{path}: cannot be read ({error.strerror})") from None
    if not isinstance(manifest, dict):
        raise LoadError(f"{path}: holds a JSON {type(manifest).__name__}, not an object")
    problems = schema_problems(manifest, MANIFEST_SCHEMA)
    if problems:
        raise LoadError(_schema_message(path, MANIFEST_SCHEMA, problems))
    return manifest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _schema_message(path: Path, schema: str, problems: list[Problem]) -> str:
    listing = "; ".join(f"{problem.message[:300]} [{problem.rule}]" for problem in problems)
    count = f"{len(problems)} problem{'s' * (len(problems) != 1)}"
    return f"{path}: does not follow schema {schema} ({count}): {listing}"


def check_files(root: Path, manifest: dict[str, Any], verify: bool = False) -> list[Problem]:
    """The files of `root` that differ from `manifest`: missing, unlisted, resized, altered.

    Sizes are always compared; sha256 for files of at most `HASH_LIMIT` bytes, or for
    every file with `verify=True`. `manifest` must have passed `read_manifest`. A file
    that cannot be read at all raises `LoadError` naming it.
    """
    try:
        listing = _listing(root)
        listed = {entry["path"]: entry for entry in manifest["files"]}
        problems = [
            Problem(path, "manifest-files", "not listed in manifest.json")
            for path in sorted(listing.keys() - listed.keys() - {MANIFEST_FILE_NAME})
        ]
        to_hash = []
        for path, entry in sorted(listed.items()):
            size = listing.get(path, -1)
            if size == -1:
                problems.append(
                    Problem(path, "manifest-files", "missing (listed in manifest.json)")
                )
            elif size is None:
                problems.append(Problem(path, "links", "links and special files are refused"))
            elif size != entry["size"]:
                message = f"{size} bytes, but manifest.json says {entry['size']}"
                problems.append(Problem(path, "manifest-size", message))
            elif verify or size <= HASH_LIMIT:
                to_hash.append(entry)
        digests = _sha256_all([(root / entry["path"], entry["size"]) for entry in to_hash])
    except OSError as error:
        raise LoadError(f"{error.filename}: cannot be read ({error.strerror})") from None
    for entry, digest in zip(to_hash, digests, strict=True):
        if digest != entry["sha256"]:
            message = f"sha256 {digest} differs from manifest.json's {entry['sha256']}"
            problems.append(Problem(entry["path"], "manifest-sha256", message))
    return problems


def check_archive(root: Path, verify: bool = False) -> dict[str, Any]:
    """`read_manifest` then `check_files`; returns the manifest, or raises `LoadError`.

    >>> check_archive(Path("no/such/folder"))
    Traceback (most recent call last):
    ...
    flambe_compat.errors.LoadError: no/such/folder/manifest.json: missing, ...
    """
    manifest = read_manifest(root)
    problems = check_files(root, manifest, verify)
    if problems:
        listing = "\n".join(f"  {problem.render(str(root))}" for problem in problems)
        raise LoadError(f"{root}: does not match its manifest.json\n{listing}")
    return manifest


def _listing(root: Path) -> dict[str, int | None]:
    """Every entry below `root` but folders, by sorted POSIX path: its size, `None` if it
    is not a regular file (a link, a FIFO...)."""
    found: dict[str, int | None] = {}
    for folder in archive_folders(root):
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                continue
            status = entry.lstat()
            size = status.st_size if S_ISREG(status.st_mode) else None
            found[entry.relative_to(root).as_posix()] = size
    return dict(sorted(found.items()))


def _sha256_all(files: list[tuple[Path, int]]) -> list[str]:
    """The sha256 of each `(path, size)`: large files on all cores (hashlib releases the
    GIL), small ones inline, where a thread would cost more than the hashing."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        large = {
            i: pool.submit(sha256_file, path)
            for i, (path, size) in enumerate(files)
            if size > _CHUNK
        }
        return [
            large[i].result() if i in large else sha256_file(path)
            for i, (path, _) in enumerate(files)
        ]


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as file:
        while count := file.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def pickle_globals(data: bytes) -> set[str]:
    """The globals a pickle names, as `module.name`, read from its opcodes (nothing unpickled).

    GLOBAL and INST carry their name; STACK_GLOBAL takes it from the two strings on
    the stack, pushed directly or fetched from the memo (a name that cannot be traced
    is reported as `?`). Python 2 names are mapped as our unpickler maps them
    (`__builtin__.set` is `builtins.set`).

    >>> import pickle
    >>> sorted(pickle_globals(pickle.dumps({1, 2}, protocol=2)))
    ['builtins.set']
    """
    stack: list[object] = []
    marks: list[int] = []
    memo: dict[int, object] = {}
    found: set[str] = set()
    ops: Iterator[tuple[pickletools.OpcodeInfo, Any, int | None]] = pickletools.genops(data)
    for opcode, arg, _ in ops:
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, qualname = str(arg).partition(" ")
            found.add(python3_name(module, qualname))
        elif name == "STACK_GLOBAL":
            pushed, last = stack[-2:] if len(stack) >= 2 else (_UNKNOWN, _UNKNOWN)
            if isinstance(pushed, str) and isinstance(last, str):
                found.add(python3_name(pushed, last))
            else:
                found.add("?")
        elif name in ("EXT1", "EXT2", "EXT4"):
            found.add(f"?.extension{arg}")  # the copyreg registry of the loading process
        if name == "MARK":
            marks.append(len(stack))
        elif name in _STRING_OPCODES:
            stack.append(arg)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(int(arg), _UNKNOWN))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            memo[len(memo) if name == "MEMOIZE" else int(arg)] = stack[-1] if stack else _UNKNOWN
        elif name == "DUP":
            stack.append(stack[-1] if stack else _UNKNOWN)
        else:
            _apply_stack_effect(opcode, stack, marks)
    return found


def _apply_stack_effect(
    opcode: pickletools.OpcodeInfo, stack: list[object], marks: list[int]
) -> None:
    """Pop what `opcode` consumes (down to its mark, if it takes one), push untracked values."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        below = before.index(pickletools.markobject)
        del stack[marks.pop() if marks else 0 :]
        del stack[len(stack) - below :]
    elif before:
        del stack[-len(before) :]
    stack.extend([_UNKNOWN] * len(opcode.stack_after))


def unsafe_globals(names: Iterable[str]) -> list[str]:
    """The names, sorted, that the allow-list does not admit.

    torch resolves its own storage types (`torch.FloatStorage`) before any unpickler
    sees them, so those are safe too.
    """
    allowed = allowed_globals()
    return sorted(
        name for name in set(names) if name not in allowed and not _is_torch_storage(name)
    )


def _is_torch_storage(qualified_name: str) -> bool:
    module, _, name = qualified_name.rpartition(".")
    if module != "torch" or "Storage" not in name:
        return False
    try:
        torch.storage._get_dtype_from_pickle_storage_type(name)
    except KeyError:
        return False
    return True


def pickle_payload(state: State, original_revision: str | None = None) -> dict[str, Any]:
    """What a protocol 2 pickle-only archive holds: header, state (plain), metadata."""
    return {
        PICKLE_HEADER_KEY: header(original_revision),
        "state": OrderedDict(state),
        "metadata": dict(state._metadata),
    }


def state_from_payload(value: Any, path: Path) -> State:
    """The `State` of an unpickled `pickle_payload`, once it passes `schemas/pickle-2.0.json`.

    Raises `LoadError` naming `path` and every broken rule.
    """
    if not isinstance(value, dict):
        raise LoadError(f"{path}: holds a {type(value).__name__}, not a protocol 2 pickle")
    try:
        view = {
            key: dict.fromkeys(part)
            if key == "state" and isinstance(part, dict)
            else jsonable(part)
            for key, part in value.items()
        }
    except ValueError as error:
        raise LoadError(f"{path}: {error}") from None
    problems = schema_problems(view, PICKLE_SCHEMA)
    if problems:
        raise LoadError(_schema_message(path, PICKLE_SCHEMA, problems))
    state = State(value["state"])
    state._metadata = dict(value["metadata"])
    state._metadata[FLAMBE_DIRECTORIES_KEY] = set(state._metadata[FLAMBE_DIRECTORIES_KEY])
    return state

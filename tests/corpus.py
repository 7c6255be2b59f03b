"""The bundled corpus of real flambe archives (fixtures/flambe-corpus) and its expectations."""

from __future__ import annotations

import hashlib
import json
import pickletools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "flambe-corpus"
DIRECTORY_MODES = ("dir", "tgz", "tgz-abs")


@dataclass(frozen=True)
class CorpusArchive:
    path: Path
    release: str
    torch_format: str
    graph: str
    mode: str
    expected: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def release_tuple(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.release.split("."))

    @property
    def layout(self) -> str:
        """`folder` for directory archives (plain or tarred), `pickle` for pickle-only ones."""
        return "folder" if self.mode in DIRECTORY_MODES else "pickle"

    @property
    def container(self) -> str:
        """How the archive is packed: `directory`, `pickle`, or either in a `tar.gz`."""
        return {"dir": "folder", "pkl": "pickle"}.get(self.mode, "tar.gz")

    @property
    def directories(self) -> list[str]:
        """The Component prefixes saved, sorted (`_flambe_directories`)."""
        return sorted(self.expected["saved"]["metadata"]["_flambe_directories"])

    def expected_reading(self) -> dict[str, Any]:
        """What a correct reader returns: `saved`, minus what the archive cannot hold.

        Folder archives written before 0.4.12 store no `_metadata` in their `state.pt`
        files, so they carry the node metadata of their text files only, plus the
        `keep_vars` default that the in-memory upgrade to revision 1.3 records.
        """
        saved = self.expected["saved"]
        if self.mode not in DIRECTORY_MODES or self.release_tuple >= (0, 4, 12):
            return saved
        metadata = saved["metadata"]
        directories = metadata["_flambe_directories"]
        node_only = {"_flambe_directories": directories, "keep_vars": "False"}
        for prefix in directories:
            node_only[prefix] = {
                k: v for k, v in metadata[prefix].items() if k.startswith("_flambe")
            }
        return {**saved, "metadata": node_only}


def archives() -> Iterator[CorpusArchive]:
    for expected_file in sorted(CORPUS.glob("*/expected.json")):
        expected = json.loads(expected_file.read_text())
        for name, entry in sorted(expected["archives"].items()):
            yield CorpusArchive(
                path=expected_file.parent / name,
                release=expected["flambe"],
                torch_format=expected["torch_format"],
                graph=entry["graph"],
                mode=entry["mode"],
                expected=entry,
            )


def digest(value: Any) -> dict[str, Any]:
    """The digest gen_corpus.py records for one value (tensor, array, or repr)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous().cpu()
        return {
            "tensor": str(t.dtype),
            "shape": list(t.shape),
            "sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest(),
        }
    if isinstance(value, np.ndarray):
        return {
            "ndarray": str(value.dtype),
            "shape": list(value.shape),
            "sha256": hashlib.sha256(value.tobytes()).hexdigest(),
        }
    return {"repr": repr(value)}


def describe(state: Any) -> dict[str, Any]:
    """The reading gen_corpus.py records: keys, value digests, metadata."""
    metadata: dict[str, Any] = {}
    for key, value in state._metadata.items():
        if key == "_flambe_directories":
            metadata[key] = sorted(value)
        elif isinstance(value, dict):
            plain = (str, int, float, bool, type(None))
            metadata[key] = {
                k: (v if isinstance(v, plain) else repr(v))
                for k, v in value.items()
                if k != "_flambe_stash"
            }
            if "_flambe_stash" in value:
                metadata[key]["_flambe_stash"] = {
                    k: digest(v) for k, v in value["_flambe_stash"].items()
                }
        else:
            metadata[key] = repr(value)
    return {
        "keys": list(state.keys()),
        "values": {k: digest(v) for k, v in state.items()},
        "metadata": metadata,
    }


def expected_revision(archive: CorpusArchive) -> str:
    """The revision detection reports: the latest one consistent with what the archive shows.

    Pickle-only archives never changed (1.4). A 1.1 folder looks like a 1.2 one, except in
    a tarball saved to an absolute path: members carried the whole path until 0.4.9.
    """
    release = archive.release_tuple
    if archive.layout == "pickle":
        return "1.4"
    if release < (0, 4, 5):
        return "1.0"
    if release < (0, 4, 9) and archive.mode == "tgz-abs":
        return "1.1"
    if release < (0, 4, 12):
        return "1.2"
    return "1.3" if release < (0, 4, 15) else "1.4"


def copy_of(name: str, into: Path) -> Path:
    """A writable copy, under `into`, of the corpus archive `name` (`0.4.18-zip/mlp-dir`)."""
    source = CORPUS / name
    target = into / source.name
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)
    return target


def truncate_storages(path: Path) -> None:
    """Cut a legacy-format torch file after its pickles: shapes stay, tensor bytes are gone."""
    with path.open("r+b") as file:
        for _ in range(4):  # magic number, protocol, system info, the object
            for _ in pickletools.genops(file):
                pass
        file.truncate(file.tell())


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Every file's bytes (folders as None) under `path`, or the file's own."""
    if not path.is_dir():
        return {"": path.read_bytes()}
    return {
        str(item.relative_to(path)): None if item.is_dir() else item.read_bytes()
        for item in sorted(path.rglob("*"))
    }

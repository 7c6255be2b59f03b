"""The ledger of a batch: one JSON line per archive processed, written as results arrive.

A batch appends a record as soon as an archive is done and flushes it, so a batch that
is killed keeps every result it had. Reading tolerates what a crash can leave: a last
line cut short is dropped (and cut off before anything is appended after it). A rerun
reads the ledger and skips each archive whose latest record is final (not `failed`)
and was made of the same bytes: same operation, path, size and fingerprint.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "ledger.jsonl"
>>> with Ledger(path) as ledger:
...     ledger.append({"operation": "validate", "path": "m.pkl", "verdict": "valid"})
>>> _ = path.open("a").write('{"operation": "validate", "pa')  # a crash mid-line
>>> list(read_records(path))
[{'operation': 'validate', 'path': 'm.pkl', 'verdict': 'valid'}]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .errors import LoadError


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of the ledger at `path` (none if it does not exist yet)."""
    try:
        with path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    return  # a record cut short by a crash: it never counted
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise LoadError(f"{path}: line {number} is not JSON ({error})") from None
                if not isinstance(record, dict):
                    raise LoadError(f"{path}: line {number} is not a JSON object")
                yield record
    except FileNotFoundError:
        return
    except OSError as error:
        raise LoadError(f"{path}: cannot read the ledger ({error.strerror})") from None


class Ledger:
    """An open ledger: `append` writes one record as one line and flushes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def __enter__(self) -> Ledger:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
            _drop_partial_line(self._file)
        except OSError as error:
            raise LoadError(f"{self.path}: cannot write the ledger ({error.strerror})") from None
        return self

    def append(self, record: Mapping[str, Any]) -> None:
        assert self._file is not None, "use the ledger in a with block"
        self._file.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._file.flush()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _drop_partial_line(file: IO[bytes]) -> None:
    """Cut a last line that a crash left without its newline, so appends start clean."""
    end = file.seek(0, os.SEEK_END)
    if end == 0:
        return
    with open(file.name, "rb") as reader:
        position = end
        while position > 0:
            step = min(position, 1 << 16)
            reader.seek(position - step)
            chunk = reader.read(step)
            newline = chunk.rfind(b"\n")
            if newline == step - 1 and position == end:
                return  # ends with a newline: nothing to cut
            if newline >= 0:
                file.truncate(position - step + newline + 1)
                return
            position -= step
    file.truncate(0)

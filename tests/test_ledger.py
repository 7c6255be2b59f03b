"""The batch ledger: one JSON line per result, robust to a crash in the middle of a line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flambe_compat.errors import LoadError
from flambe_compat.ledger import Ledger, read_records


def test_records_are_appended_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.jsonl"
    with Ledger(path) as ledger:
        ledger.append({"path": "a", "verdict": "valid"})
        assert path.read_text() == '{"path":"a","verdict":"valid"}\n'  # flushed at once
    with Ledger(path) as ledger:
        ledger.append({"path": "b", "verdict": "invalid"})
    assert [r["path"] for r in read_records(path)] == ["a", "b"]


def test_a_line_cut_by_a_crash_is_dropped_and_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b'{"path": "a"}\n{"path": "b", "verd')
    assert list(read_records(path)) == [{"path": "a"}]
    with Ledger(path) as ledger:
        ledger.append({"path": "c"})
    assert [r["path"] for r in read_records(path)] == ["a", "c"]
    only_partial = tmp_path / "partial.jsonl"
    only_partial.write_bytes(b'{"path": "x"' * 30_000)  # longer than one read block
    with Ledger(only_partial) as ledger:
        ledger.append({"path": "y"})
    assert list(read_records(only_partial)) == [{"path": "y"}]


def test_a_missing_ledger_is_empty(tmp_path: Path) -> None:
    assert list(read_records(tmp_path / "none.jsonl")) == []


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n"])
def test_a_damaged_line_inside_the_ledger_is_an_error(tmp_path: Path, line: bytes) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b'{"path": "a"}\n' + line + b'{"path": "b"}\n')
    with pytest.raises(LoadError, match="line 2"):
        list(read_records(path))

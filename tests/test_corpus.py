"""Every real flambe archive of the corpus loads, with flambe absent, to exactly what was saved."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import pytest

from flambe_compat import State, load_state_from_file
from tests.corpus import CorpusArchive, archives, describe

ARCHIVES = list(archives())


def test_the_corpus_is_complete() -> None:
    assert len(ARCHIVES) == 78
    assert {a.release for a in ARCHIVES} == {"0.4.3", "0.4.6", "0.4.11", "0.4.13", "0.4.18"}
    assert {a.torch_format for a in ARCHIVES} == {"legacy", "zip"}
    assert {a.mode for a in ARCHIVES} == {"dir", "tgz", "pkl", "pkltgz", "tgz-abs"}


def test_flambe_is_not_installed() -> None:
    assert importlib.util.find_spec("flambe") is None


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda a: a.id)
def test_corpus_archive_reads_exactly(archive: CorpusArchive) -> None:
    state = load_state_from_file(archive.path)
    assert isinstance(state, State)
    got, want = describe(state), archive.expected_reading()
    if archive.mode in ("pkl", "pkltgz"):
        assert got["keys"] == want["keys"]
    else:
        assert sorted(got["keys"]) == sorted(want["keys"])
    assert got["values"] == want["values"]
    assert got["metadata"] == want["metadata"]


def test_loading_leaves_no_temporary_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for archive in ARCHIVES:
        load_state_from_file(archive.path)
    assert list(tmp_path.iterdir()) == []

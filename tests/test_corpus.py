"""Every real flambe archive of the corpus loads, with flambe absent, to exactly what was saved."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import pytest
import torch

from flambe_compat import State, load_state_from_file, save_state_to_file
from tests.corpus import CORPUS, CorpusArchive, archives, describe

ARCHIVES = list(archives())
CORPUS_MLP = CORPUS / "0.4.18-legacy" / "mlp-pkl.pkl"


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


@pytest.mark.parametrize(
    "archive",
    [a for a in ARCHIVES if a.graph == "mlp" and a.release == "0.4.18"],
    ids=lambda a: a.id,
)
def test_map_location_moves_every_tensor(archive: CorpusArchive) -> None:
    """As in `torch.load`: a device name, or a function of (storage, location)."""
    on_meta = load_state_from_file(archive.path, map_location="meta")
    seen: list[str] = []

    def record(storage: torch.UntypedStorage, location: str) -> torch.UntypedStorage:
        seen.append(location)
        return storage

    on_cpu = load_state_from_file(archive.path, map_location=record)
    tensors = [key for key, value in on_cpu.items() if isinstance(value, torch.Tensor)]
    assert tensors and seen and set(seen) == {"cpu"}
    for key in tensors:
        assert on_meta[key].device.type == "meta"
        assert on_meta[key].shape == on_cpu[key].shape


def test_map_location_applies_to_protocol_2(tmp_path: Path) -> None:
    state = load_state_from_file(CORPUS_MLP)
    for pickle_only in (False, True):
        path = tmp_path / f"m{pickle_only}"
        save_state_to_file(state, path, pickle_only=pickle_only)
        saved = path.with_name(path.name + ".pkl") if pickle_only else path
        moved = load_state_from_file(saved, map_location="meta")
        assert {v.device.type for v in moved.values() if isinstance(v, torch.Tensor)} == {"meta"}

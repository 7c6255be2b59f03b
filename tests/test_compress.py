"""tar.gz streams: standard gzip with python-isal and with the standard library alike."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import pytest

from flambe_compat.compress import fast, gzip_reader, gzip_writer, write_tar_gz

DATA = bytes(range(256)) * 5000 + b"tail"
IMPLEMENTATIONS = [pytest.param(True, id="isal"), pytest.param(False, id="stdlib")]


def test_isal_is_installed() -> None:
    assert fast()


@pytest.mark.parametrize("use_isal", IMPLEMENTATIONS)
def test_standard_gzip_both_ways(tmp_path: Path, use_isal: bool) -> None:
    path = tmp_path / "data.gz"
    with gzip_writer(path, use_isal) as stream:
        stream.write(DATA)
    assert gzip.decompress(path.read_bytes()) == DATA
    for reader in IMPLEMENTATIONS:
        with gzip_reader(path, reader.values[0]) as stream:
            assert stream.read() == DATA


@pytest.mark.parametrize("use_isal", IMPLEMENTATIONS)
def test_tarballs_read_by_the_standard_library(tmp_path: Path, use_isal: bool) -> None:
    folder = tmp_path / "m"
    (folder / "child").mkdir(parents=True)
    (folder / "child" / "state.pt").write_bytes(DATA)
    (folder / "version.txt").write_text("Model:1")
    write_tar_gz(folder, "m", tmp_path / "m.tar.gz", use_isal)
    with tarfile.open(tmp_path / "m.tar.gz", "r:gz") as tar:  # flambe 0.4.18's reading
        assert tar.getnames() == ["m", "m/child", "m/child/state.pt", "m/version.txt"]
        extracted = tar.extractfile("m/child/state.pt")
        assert extracted is not None and extracted.read() == DATA


def test_writer_refuses_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "x.gz").write_bytes(b"keep")
    with pytest.raises(FileExistsError), gzip_writer(tmp_path / "x.gz"):
        pass
    assert (tmp_path / "x.gz").read_bytes() == b"keep"

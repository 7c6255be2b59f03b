"""tar.gz streams: standard gzip with python-isal and with the standard library alike,
in indexed members inflated in parallel, and any other gzip as one stream."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from flambe_compat import compress
from flambe_compat.compress import Unpacked, fast, gzip_reader, gzip_writer, tar_gz_writer

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
    long_name = "m/" + "deep." * 40 + "/state.pt"  # past ustar's 100 bytes: a pax header
    with tar_gz_writer(tmp_path / "m.tar.gz", use_isal) as tar:
        tar.folder("m")
        tar.folder("m/child")
        with tar.member("m/child/state.pt", len(DATA)) as write:
            for start in range(0, len(DATA), 7000):  # a member written in pieces
                write(DATA[start : start + 7000])
        tar.file("m/version.txt", b"Model:1")
        tar.folder(long_name.rsplit("/", 1)[0])
        tar.file(long_name, b"")
    with tarfile.open(tmp_path / "m.tar.gz", "r:gz") as read:  # flambe 0.4.18's reading
        assert read.getnames() == [
            "m",
            "m/child",
            "m/child/state.pt",
            "m/version.txt",
            long_name.rsplit("/", 1)[0],
            long_name,
        ]
        assert [member.mode for member in read.getmembers()[:3]] == [0o755, 0o755, 0o644]
        extracted = read.extractfile("m/child/state.pt")
        assert extracted is not None and extracted.read() == DATA
    assert (tmp_path / "m.tar.gz").stat().st_size > 0
    size = len(gzip.decompress((tmp_path / "m.tar.gz").read_bytes()))
    assert size % tarfile.RECORDSIZE == 0  # padded to whole records, as tarfile pads


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command")
def test_gnu_tar_lists_what_it_writes(tmp_path: Path) -> None:
    with tar_gz_writer(tmp_path / "m.tar.gz") as tar:
        tar.folder("m")
        tar.file("m/a.txt", b"hello")
    listed = subprocess.run(
        ["tar", "-tzf", str(tmp_path / "m.tar.gz")], capture_output=True, text=True, check=True
    )
    assert listed.stdout.split() == ["m/", "m/a.txt"]


@pytest.mark.parametrize("count", [3, 5])
def test_a_member_takes_exactly_the_bytes_it_announced(tmp_path: Path, count: int) -> None:
    with (
        pytest.raises(ValueError, match="4 bytes announced"),
        tar_gz_writer(tmp_path / "m.tgz") as tar,
        tar.member("m/a", 4) as write,
    ):
        write(b"x" * count)


def test_writer_refuses_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "x.gz").write_bytes(b"keep")
    with pytest.raises(FileExistsError), gzip_writer(tmp_path / "x.gz"):
        pass
    assert (tmp_path / "x.gz").read_bytes() == b"keep"


@pytest.fixture
def small_members(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(compress, "MEMBER_BYTES", 4096)
    return 4096


def members_of(path: Path) -> list[tuple[int, int, int]] | None:
    with path.open("rb") as raw:
        return compress._member_index(raw.fileno())


@pytest.mark.parametrize("use_isal", IMPLEMENTATIONS)
def test_members_are_indexed_and_read_by_any_gzip(
    tmp_path: Path, use_isal: bool, small_members: int
) -> None:
    path = tmp_path / "data.gz"
    with gzip_writer(path, use_isal) as stream:
        for start in range(0, len(DATA), 1000):  # writes that straddle members
            stream.write(DATA[start : start + 1000])
    members = members_of(path)
    assert members is not None
    assert len(members) == -(-len(DATA) // small_members)
    assert [size for _, _, size in members[:-1]] == [small_members] * (len(members) - 1)
    assert sum(length for _, length, _ in members) == path.stat().st_size
    assert gzip.decompress(path.read_bytes()) == DATA
    gnu = shutil.which("gzip")
    if gnu is not None:
        assert subprocess.run([gnu, "-dc", path], capture_output=True, check=True).stdout == DATA
    for reader in IMPLEMENTATIONS:
        with gzip_reader(path, reader.values[0]) as unpacked:
            assert unpacked.read() == DATA


def test_an_empty_stream_is_one_valid_member(tmp_path: Path) -> None:
    path = tmp_path / "empty.gz"
    with gzip_writer(path):
        pass
    assert gzip.decompress(path.read_bytes()) == b""
    assert members_of(path) == [(0, path.stat().st_size, 0)]
    with gzip_reader(path) as unpacked:
        assert unpacked.read() == b""


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda: gzip.compress(DATA, mtime=0), id="flambe-one-member"),
        pytest.param(lambda: gzip.compress(DATA[:500]) + gzip.compress(DATA[500:]), id="two"),
    ],
)
def test_other_gzip_files_are_read_as_one_stream(tmp_path: Path, data: object) -> None:
    path = tmp_path / "other.gz"
    path.write_bytes(data())  # type: ignore[operator]
    assert members_of(path) is None
    with gzip_reader(path) as unpacked:
        assert unpacked.read() == DATA


def test_an_index_that_does_not_tile_the_file_is_not_used(
    tmp_path: Path, small_members: int
) -> None:
    path = tmp_path / "data.gz"
    with gzip_writer(path) as stream:
        stream.write(DATA)
    whole = path.read_bytes()
    path.write_bytes(whole + b"\0")
    assert members_of(path) is None
    path.write_bytes(whole[:-1])
    assert members_of(path) is None
    with pytest.raises(compress.GZIP_ERRORS), gzip_reader(path) as unpacked:
        unpacked.read()


@pytest.mark.parametrize("use_isal", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("offset", "message"),
    [
        pytest.param(lambda length: length - 8, "fails its CRC-32 check", id="crc"),
        pytest.param(lambda length: length - 4, "does not match its index", id="trailer-size"),
        pytest.param(lambda length: 20, "does not match its index", id="index-size"),
    ],
)
def test_a_member_that_does_not_check_out_is_refused(
    tmp_path: Path, small_members: int, use_isal: bool, offset: object, message: str
) -> None:
    path = tmp_path / "data.gz"
    with gzip_writer(path) as stream:
        stream.write(DATA)
    members = members_of(path)
    assert members is not None
    second, length, _ = members[1]
    data = bytearray(path.read_bytes())
    data[second + offset(length)] ^= 1  # type: ignore[operator]
    path.write_bytes(bytes(data))
    with (
        pytest.raises(gzip.BadGzipFile, match=f"member at byte {second} {message}"),
        gzip_reader(path, use_isal) as unpacked,
    ):
        unpacked.read()


def test_a_stream_seeks_forward_only() -> None:
    blocks = iter([b"abc", b"defg", b""])
    unpacked = Unpacked(lambda: next(blocks, b""))
    assert unpacked.read(2) == b"ab"
    assert unpacked.seek(5) == 5
    assert unpacked.tell() == 5
    with pytest.raises(io.UnsupportedOperation, match="forward only"):
        unpacked.seek(4)
    with pytest.raises(io.UnsupportedOperation):
        unpacked.seek(0, io.SEEK_END)
    assert unpacked.seek(1, io.SEEK_CUR) == 6
    assert unpacked.read() == b"g"
    assert unpacked.read(10) == b""

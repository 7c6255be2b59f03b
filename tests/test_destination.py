"""Destinations: a folder and a tarball get the same files, with the same digests."""

from __future__ import annotations

import hashlib
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flambe_compat.compress import tar_gz_writer
from flambe_compat.destination import Destination, Folder, Tarball

LARGE = bytes(range(256)) * 8192  # 2 MiB: hashed on the helper thread


def fill(files: Destination) -> dict[str, tuple[int, str]]:
    """A small save's worth of files, each kind of write once; returns the digests."""
    files.folder("")
    files.folder("child/")
    size, sha256 = files.whole("version.txt", b"Model:1.0.0")
    digests = {"version.txt": (size, sha256)}
    with ThreadPoolExecutor(1) as hasher:
        for name, size in (("child/state.pt", len(LARGE) + 5), ("child/stash.pkl", None)):
            with files.hashed(name, size, hasher) as file:
                file.write(b"head!")
                if size is None:
                    file.write(b"unknown size")
                else:
                    file.write_kept(LARGE)
            digests[name] = (file.size, file.sha256)
    with files.plain("child/config.yaml") as plain:
        plain.write(b"!Model {}\n")
    return digests


def contents(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_a_tarball_gets_the_files_and_digests_a_folder_gets(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    folder_digests = fill(Folder(tmp_path / "folder" / "m"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with tar_gz_writer(tmp_path / "m.tar.gz") as tar:
        tarball_digests = fill(Tarball(tar, "m", scratch))
    assert tarball_digests == folder_digests
    with tarfile.open(tmp_path / "m.tar.gz", "r:gz") as read:
        read.extractall(tmp_path / "tarball", filter="data")
    expected = contents(tmp_path / "folder")
    assert contents(tmp_path / "tarball") == expected
    assert sorted(expected) == [
        "m/child/config.yaml",
        "m/child/stash.pkl",
        "m/child/state.pt",
        "m/version.txt",
    ]
    for name, (size, sha256) in folder_digests.items():
        data = expected[f"m/{name}"]
        assert (size, sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert os.listdir(scratch) == []  # the spilled files are gone


def test_a_tarball_without_a_root_puts_members_at_the_top(tmp_path: Path) -> None:
    with (
        tar_gz_writer(tmp_path / "m.pkl.tar.gz") as tar,
        Tarball(tar, "", tmp_path).plain("m.pkl") as file,
    ):
        file.write(b"pickle")
    with tarfile.open(tmp_path / "m.pkl.tar.gz", "r:gz") as read:
        assert read.getnames() == ["m.pkl"]


def test_a_folder_refuses_to_replace_a_file(tmp_path: Path) -> None:
    files = Folder(tmp_path)
    files.whole("a", b"first")
    for write in (lambda: files.whole("a", b"x"), lambda: files.plain("a").__enter__()):
        with pytest.raises(FileExistsError):
            write()
    assert (tmp_path / "a").read_bytes() == b"first"


def test_a_failed_spilled_file_leaves_no_member_and_no_temp_file(tmp_path: Path) -> None:
    (tmp_path / "scratch").mkdir()
    with (
        pytest.raises(RuntimeError),
        tar_gz_writer(tmp_path / "m.tar.gz") as tar,
        Tarball(tar, "m", tmp_path / "scratch").plain("state.pt") as file,
    ):
        file.write(b"half")
        raise RuntimeError("pickling failed")
    assert os.listdir(tmp_path / "scratch") == []

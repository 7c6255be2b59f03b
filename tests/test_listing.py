"""The one walk over a save folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flambe_compat.errors import LoadError
from flambe_compat.listing import MAX_FOLDER_DEPTH, listing, read_whole, walk


def test_folders_are_parents_first_and_sorted(tmp_path: Path) -> None:
    for name in ("b/c", "a/z/y", "a/b", "c"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "a" / "link").symlink_to(tmp_path / "c")
    relative = [folder.relative for folder in walk(tmp_path)]
    assert relative == ["", "a", "b", "c", "a/b", "a/z", "b/c", "a/z/y"]


def test_files_specials_and_subfolders(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "state.pt").write_bytes(b"12345")
    (tmp_path / "version.txt").write_text("C:1.0.0")
    (tmp_path / "link").symlink_to(tmp_path / "version.txt")
    os.mkfifo(tmp_path / "fifo")
    root, child = walk(tmp_path)
    assert (root.files, root.specials, root.subfolders) == (
        {"version.txt": 7},
        ("fifo", "link"),
        ("m",),
    )
    assert (child.relative, child.files, child.join("state.pt")) == (
        "m",
        {"state.pt": 5},
        "m/state.pt",
    )
    assert listing([root, child]) == {"fifo": None, "link": None, "m/state.pt": 5, "version.txt": 7}


def test_deep_trees_are_refused(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d"] * (MAX_FOLDER_DEPTH + 1))
    deep.mkdir(parents=True)
    with pytest.raises(LoadError, match="deeper than"):
        walk(tmp_path)


@pytest.mark.parametrize(
    "walked_size, limit, expected",
    [(5, 100, b"hello"), (2, 100, b"hello"), (9, 100, b"hello"), (5, 3, b"hell")],
    ids=["unchanged", "grown", "shrunk", "past-the-limit"],
)
def test_read_whole(tmp_path: Path, walked_size: int, limit: int, expected: bytes) -> None:
    (tmp_path / "f").write_bytes(b"hello")
    assert read_whole(tmp_path / "f", walked_size, limit) == expected

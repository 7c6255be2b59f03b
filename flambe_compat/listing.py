"""The one walk over a save folder: every folder below it, and what each one holds.

Detection, description, integrity checks and the manifest writer all work from one
`walk`: one `os.scandir` per folder (the entry types come with the listing, and only
regular files are stat'ed), never through a link, without recursion, refused past
`MAX_FOLDER_DEPTH` levels.

>>> folders = walk(Path("fixtures/flambe-corpus/0.4.18-zip/counter-dir"))
>>> [folder.relative for folder in folders], sorted(folders[0].files)[:2]
([''], ['config.yaml', 'protocol_version.txt'])
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LoadError

MAX_FOLDER_DEPTH = 100
"""Deeper save folders are refused (flambe graphs are a few Components deep)."""


@dataclass(frozen=True)
class Folder:
    """One folder of a save: its path relative to the save folder (`""` for the root)."""

    relative: str
    path: Path
    files: dict[str, int] = field(default_factory=dict)
    """Regular files by name, with their sizes, sorted by name."""
    specials: tuple[str, ...] = ()
    """Links, FIFOs, devices and sockets, by name: never read."""
    subfolders: tuple[str, ...] = ()

    def join(self, name: str) -> str:
        """The path of `name` in this folder, relative to the save folder."""
        return f"{self.relative}/{name}" if self.relative else name

    def local(self, name: str) -> str:
        """The local path of `name` in this folder, as a string (a `Path` costs several
        times more to build, over the thousands of files of a large save)."""
        return f"{os.fspath(self.path)}/{name}"


def walk(root: Path) -> list[Folder]:
    """The save folder `root` and every folder below it, parents first, names sorted."""
    folders: list[Folder] = []
    queue = deque([(root, "", 0)])
    while queue:
        path, relative, depth = queue.popleft()
        if depth > MAX_FOLDER_DEPTH:
            raise LoadError(f"{path}: folders nested deeper than {MAX_FOLDER_DEPTH} levels")
        files: dict[str, int] = {}
        specials: list[str] = []
        subfolders: list[str] = []
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_symlink():
                    specials.append(entry.name)
                elif entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.name)
                else:
                    status = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(status.st_mode):
                        files[entry.name] = status.st_size
                    else:
                        specials.append(entry.name)
        folders.append(Folder(relative, path, files, tuple(specials), tuple(subfolders)))
        queue.extend(
            (path / name, f"{relative}/{name}" if relative else name, depth + 1)
            for name in subfolders
        )
    return folders


_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def read_whole(path: str | os.PathLike[str], size: int, limit: int) -> bytearray:
    """The bytes of the regular file at `path`, which the walk found `size` bytes long:
    one read of `size` + 1 bytes when it is unchanged, and never more than `limit` + 1
    bytes (so the caller sees a file grown past its limit). `OSError` if unreadable.
    """
    descriptor = os.open(path, _READ)
    try:
        data = bytearray(min(size, limit) + 1)
        count = os.readv(descriptor, [data])
        if count < len(data):
            del data[count:]
        else:  # grown since the walk
            while len(data) <= limit and (more := os.read(descriptor, limit + 1 - len(data))):
                data += more
        return data
    finally:
        os.close(descriptor)


def listing(folders: list[Folder]) -> dict[str, int | None]:
    """Every entry of a walk but folders, by sorted path: its size, `None` if it is not a
    regular file."""
    found: dict[str, int | None] = {}
    for folder in folders:
        found.update((folder.join(name), size) for name, size in folder.files.items())
        found.update((folder.join(name), None) for name in folder.specials)
    return dict(sorted(found.items()))

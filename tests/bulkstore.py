"""Generated stores for the batch tests: real corpus archives under many names, bad ones.

`make_store(root, copies)` copies every archive of `fixtures/flambe-corpus` `copies`
times under `copyN/VERSION/NAME` and adds `BAD` (broken archives, each invalid for its
own reason). `hanging_pickle` is an archive whose validation takes minutes (a dict of
int keys with colliding hashes, the known quadratic gap of pickle loading).
"""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import tarfile
from pathlib import Path

from tests.corpus import CORPUS, archives

BOMB_CAP = 16 << 20
"""The unpack cap the batch tests set (`FLAMBE_COMPAT_MAX_UNPACKED_BYTES`), below the bomb."""
BAD = ("bad/truncated.tar.gz", "bad/garbage.pkl", "bad/lonely/node-dir", "bad/bomb.tar.gz")


def corpus_archives() -> list[Path]:
    """Every archive of the corpus (folders, tarballs, pickles), sorted."""
    return sorted(archive.path for archive in archives())


def make_store(root: Path, copies: int = 1) -> list[str]:
    """Fill `root`; returns the relative paths of every archive in it."""
    relative: list[str] = []
    for copy in range(copies):
        for archive in corpus_archives():
            name = f"copy{copy}/{archive.parent.name}/{archive.name}"
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if archive.is_dir():
                shutil.copytree(archive, target)
            else:
                shutil.copyfile(archive, target)
            relative.append(name)
    bad = root / "bad"
    bad.mkdir(parents=True)
    tarball = (CORPUS / "0.4.18-zip" / "mlp-tgz.tar.gz").read_bytes()
    (bad / "truncated.tar.gz").write_bytes(tarball[: len(tarball) // 2])
    (bad / "garbage.pkl").write_bytes(bytes(range(256)) * 8)
    lonely = bad / "lonely" / "node-dir"
    lonely.mkdir(parents=True)
    (lonely / "protocol_version.txt").write_text("1")
    write_bomb(bad / "bomb.tar.gz", 4 * BOMB_CAP)
    return sorted([*relative, *BAD])


def write_bomb(path: Path, unpacked: int) -> None:
    """A tarball of one member of `unpacked` zero bytes (a few KiB compressed)."""
    with gzip.open(path, "wb", compresslevel=9) as raw, tarfile.open(fileobj=raw, mode="w") as tar:
        member = tarfile.TarInfo("bomb/state.pt")
        member.size = unpacked
        tar.addfile(member, _Zeros(unpacked))


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def hanging_pickle(path: Path, keys: int = 40_000) -> None:
    """A `.pkl` whose unpickling inserts `keys` int keys with one hash into a dict."""
    modulus = (1 << 61) - 1  # CPython hashes ints modulo this
    body = io.BytesIO()
    body.write(b"\x80\x02}(")
    for index in range(keys):
        body.write(pickle.dumps((index + 1) * modulus + 7, protocol=2)[2:-1])
        body.write(b"K\x01")
    body.write(b"u.")
    path.write_bytes(body.getvalue())

"""File digests: the sha256 that protocol 2 manifests record, read in 1 MiB chunks.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "f"
>>> _ = path.write_bytes(b"abc")
>>> sha256_file(path)[:16]
'ba7816bf8f01cfea'
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as file:
        while count := file.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def sha256_all(files: list[tuple[Path, int]]) -> list[str]:
    """The sha256 of each `(path, size)`: large files on all cores (hashlib releases the
    GIL), small ones inline, where a thread would cost more than the hashing."""
    large_files = [(i, path) for i, (path, size) in enumerate(files) if size > _CHUNK]
    if not large_files:
        return [sha256_file(path) for path, _ in files]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        large = {i: pool.submit(sha256_file, path) for i, path in large_files}
        return [
            large[i].result() if i in large else sha256_file(path)
            for i, (path, _) in enumerate(files)
        ]


def sha256_ahead(contents: Mapping[str, bytes | bytearray]) -> Future[dict[str, str]]:
    """The sha256 of each of `contents` (by name), computed on a helper thread while the
    caller goes on: hashlib releases the GIL, so a load decodes payloads on one core while
    their bytes are hashed on the other. `contents` must not change until the result.

    >>> sha256_ahead({"f": b"abc"}).result()["f"][:16]
    'ba7816bf8f01cfea'
    """
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(
            lambda: {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
        )
    finally:
        pool.shutdown(wait=False)

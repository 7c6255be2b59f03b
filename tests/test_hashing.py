"""Files hashed while written: the digest and size are those of the bytes on disk."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from flambe_compat.hashing import PARALLEL_BYTES, HashedFile, write_hashed

CHUNKS = [b"header", bytes(range(256)) * 9, b"x" * PARALLEL_BYTES, b"", b"tail" * 3]


@pytest.mark.parametrize("threaded", [False, True])
def test_digest_and_size_match_the_file(tmp_path: Path, threaded: bool) -> None:
    path = tmp_path / "f"
    with ThreadPoolExecutor(1) as pool, HashedFile(path, pool if threaded else None) as file:
        for chunk in CHUNKS:
            assert file.write(memoryview(chunk)) == len(chunk)
    data = path.read_bytes()
    assert data == b"".join(CHUNKS)
    assert (file.size, file.sha256) == (len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("threaded", [False, True])
def test_bytes_handed_to_a_function_are_hashed_in_order(threaded: bool) -> None:
    received: list[bytes] = []
    with ThreadPoolExecutor(1) as pool:
        with HashedFile(
            lambda view: received.append(bytes(view)), pool if threaded else None
        ) as file:
            for chunk in CHUNKS:
                file.write(chunk)
        data = b"".join(CHUNKS)
        assert b"".join(received) == data
        assert (file.size, file.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_kept_chunks_are_hashed_in_order_on_two_threads(tmp_path: Path) -> None:
    chunks = [bytes([i]) * (PARALLEL_BYTES + i) if i % 2 else b"small%d" % i for i in range(9)]
    with ThreadPoolExecutor(2) as pool:
        files = []
        for n in range(3):  # files written one after another, their hashes still running
            with HashedFile(tmp_path / f"f{n}", pool) as file:
                for chunk in chunks[n:]:
                    assert file.write_kept(chunk) == len(chunk)
            files.append(file)
        for n, file in enumerate(files):
            data = b"".join(chunks[n:])
            assert (tmp_path / f"f{n}").read_bytes() == data
            assert (file.size, file.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_torch_save_through_a_hashed_file(tmp_path: Path) -> None:
    value = {"w": torch.arange(PARALLEL_BYTES, dtype=torch.float32), "b": torch.ones(3)}
    path = tmp_path / "state.pt"
    with ThreadPoolExecutor(1) as pool, HashedFile(path, pool) as file:
        torch.save(value, file)  # type: ignore[arg-type]
    assert file.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(torch.load(path)["w"], value["w"])


def test_write_hashed_refuses_an_existing_file(tmp_path: Path) -> None:
    file = write_hashed(tmp_path / "a", b"abc")
    assert (file.size, file.sha256) == (3, hashlib.sha256(b"abc").hexdigest())
    with pytest.raises(FileExistsError):
        write_hashed(tmp_path / "a", b"other")
    assert (tmp_path / "a").read_bytes() == b"abc"

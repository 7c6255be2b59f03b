"""Peeking: keys, dtypes and shapes from the pickle alone; no tensor byte, no foreign code."""

from __future__ import annotations

import collections
import datetime
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from flambe_compat.container import opened
from flambe_compat.peek import Opaque, PeekError, TensorInfo, peek_file
from tests.corpus import CorpusArchive, archives, truncate_storages
from tests.test_ziprecords import record_reads

ARCHIVES = list(archives())


class MarkerOnSetstate:
    """Creates its marker file when unpickled (through `__setstate__`)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).touch()


def make_marker(marker: str) -> str:
    """Creates the marker file: what unpickling a `MarkerOnReduce` runs."""
    Path(marker).touch()
    return marker


class MarkerOnReduce:
    """Unpickles as a call to `make_marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return make_marker, (self.marker,)


def save(obj: Any, path: Path, zip_format: bool) -> Path:
    """`torch.save` in the zip format or the legacy one."""
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    return path


def tensor_digests(value: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """The tensors of a peeked state as expected.json records them (dtype, shape)."""
    return {
        prefix + key: {"tensor": f"torch.{item.dtype}", "shape": list(item.shape)}
        for key, item in value.items()
        if isinstance(item, TensorInfo)
    }


def expected_tensors(archive: CorpusArchive) -> dict[str, dict[str, Any]]:
    """The saved tensors of a corpus archive (dtype, shape)."""
    return {
        key: {"tensor": value["tensor"], "shape": value["shape"]}
        for key, value in archive.expected["saved"]["values"].items()
        if "tensor" in value
    }


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda a: a.id)
def test_corpus_tensors_from_the_pickle_alone(archive: CorpusArchive) -> None:
    found: dict[str, dict[str, Any]] = {}
    with opened(archive.path) as opened_archive:
        if archive.layout == "pickle":
            peeked = peek_file(opened_archive.payload)
            assert type(peeked.value).__name__ == "State"
            assert set(peeked.value._metadata["_flambe_directories"]) == set(archive.directories)
            found = tensor_digests(peeked.value)
        else:
            for state_file in sorted(opened_archive.payload.rglob("state.pt")):
                folder = state_file.parent.relative_to(opened_archive.payload).as_posix()
                prefix = "" if folder == "." else folder.replace("/", ".") + "."
                peeked = peek_file(state_file)
                found.update(tensor_digests(peeked.value, prefix))
        assert peeked.unsafe_globals == []
    assert found == expected_tensors(archive)


def test_a_corpus_stash_tensor() -> None:
    archive = next(a for a in ARCHIVES if a.id == "0.4.18-legacy/wrapper-dir")
    stash = peek_file(archive.path / "stash.pkl").value
    assert stash["0"] == TensorInfo("float32", (4,))
    assert stash["1"] == {"k": [1, 2]}


DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
]


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_dtypes_and_shapes(tmp_path: Path, zip_format: bool) -> None:
    base = torch.arange(12.0)
    state = {str(dtype): torch.zeros(2, 3, dtype=dtype) for dtype in DTYPES}
    state |= {
        "scalar": torch.tensor(3.0),
        "empty": torch.zeros(0, 5),
        "view": base[2:8].view(2, 3),
        "transposed": base.view(3, 4).t(),
        "parameter": torch.nn.Parameter(torch.ones(7)),
    }
    peeked = peek_file(save(state, tmp_path / "state.pt", zip_format)).value
    for dtype in DTYPES:
        assert peeked[str(dtype)] == TensorInfo(str(dtype).removeprefix("torch."), (2, 3))
    assert peeked["scalar"] == TensorInfo("float32", ())
    assert peeked["empty"] == TensorInfo("float32", (0, 5))
    assert peeked["view"] == TensorInfo("float32", (2, 3))
    assert peeked["transposed"] == TensorInfo("float32", (4, 3))
    assert peeked["parameter"] == TensorInfo("float32", (7,))


def test_module_metadata_survives(tmp_path: Path) -> None:
    state = torch.nn.Sequential(torch.nn.Linear(4, 2)).state_dict()
    peeked = peek_file(save(state, tmp_path / "state.pt", zip_format=False)).value
    assert list(peeked) == ["0.weight", "0.bias"]
    assert peeked._metadata == {"": {"version": 1}, "0": {"version": 1}}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_sparse_tensors(tmp_path: Path, zip_format: bool) -> None:
    path = save({"s": torch.eye(3).to_sparse()}, tmp_path / "state.pt", zip_format)
    assert peek_file(path).value["s"] == TensorInfo("float32", (3, 3))


@pytest.mark.parametrize(
    ("shape", "dtype", "nbytes"),
    [
        ((8, 4), "float32", 128),
        ((3,), "bool", 3),
        ((2, 3), "bfloat16", 12),
        ((), "float64", 8),
        ((0, 9), "int64", 0),
        ((2, 2), "complex64", 32),
    ],
)
def test_tensor_info_nbytes(shape: tuple[int, ...], dtype: str, nbytes: int) -> None:
    assert TensorInfo(dtype, shape).nbytes == nbytes


def test_a_legacy_file_without_its_storage_bytes(tmp_path: Path) -> None:
    path = save({"w": torch.randn(1000, 100)}, tmp_path / "state.pt", zip_format=False)
    truncate_storages(path)
    assert path.stat().st_size < 1000
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises: it needs the bytes
        torch.load(path, weights_only=True)
    assert peek_file(path).value == {"w": TensorInfo("float32", (1000, 100))}


def test_a_zip_file_with_corrupted_tensor_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save({"w": torch.randn(100, 100)}, tmp_path / "state.pt", zip_format=True)
    with zipfile.ZipFile(path) as archive:
        records = [i for i in archive.infolist() if "/data/" in i.filename]
    assert records
    with path.open("r+b") as file:
        for record in records:
            file.seek(record.header_offset + 26)
            name_length, extra_length = struct.unpack("<HH", file.read(4))
            file.seek(record.header_offset + 30 + name_length + extra_length)
            file.write(b"\xff" * record.compress_size)
    with zipfile.ZipFile(path) as archive, pytest.raises(zipfile.BadZipFile):
        archive.read(records[0].filename)

    read_records = record_reads(monkeypatch)
    assert peek_file(path).value == {"w": TensorInfo("float32", (100, 100))}
    assert [name.rpartition("/")[2] for name in read_records] == ["data.pkl"]


def unsafe_state(marker: Path) -> dict[str, Any]:
    """A state naming globals off the allow-list, two of which would create `marker`."""
    return {
        "counter": collections.Counter("abca"),
        "date": datetime.date(2020, 1, 2),
        "setstate": MarkerOnSetstate(marker),
        "reduce": MarkerOnReduce(marker),
        "weight": torch.ones(2),
    }


UNSAFE_GLOBALS = {
    "collections.Counter",
    "datetime.date",
    f"{__name__}.MarkerOnSetstate",
    f"{__name__}.make_marker",
}


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle"])
def test_unsafe_globals_are_recorded_and_not_run(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "payload"
    if kind == "pickle":
        path.write_bytes(pickle.dumps(unsafe_state(marker), protocol=2))
    else:
        save(unsafe_state(marker), path, zip_format=kind == "zip")
    assert not marker.exists()

    peeked = peek_file(path)
    assert not marker.exists()
    assert set(peeked.unsafe_globals) == UNSAFE_GLOBALS
    assert len(peeked.unsafe_globals) == len(UNSAFE_GLOBALS)
    value = peeked.value
    assert value["weight"] == TensorInfo("float32", (2,))
    for key in ("counter", "date", "setstate", "reduce"):
        assert isinstance(value[key], Opaque)
    assert repr(value["date"]) == "<datetime.date>"

    if kind == "pickle":  # the control: a plain load does run the archive's code
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_unsafe_globals_inside_a_nested_torch_file(tmp_path: Path) -> None:
    nested = io.BytesIO()
    torch.save({"c": collections.Counter("ab")}, nested, _use_new_zipfile_serialization=False)

    class FromBytes:
        def __reduce__(self) -> tuple[Any, ...]:
            return torch.storage._load_from_bytes, (nested.getvalue(),)

    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"x": FromBytes()}, protocol=2))
    peeked = peek_file(path)
    assert isinstance(peeked.value["x"]["c"], Opaque)
    assert peeked.unsafe_globals == ["collections.Counter"]


@pytest.mark.parametrize(
    "content",
    [b"", b"hello", b"PK\x03\x04 not a zip", pickle.dumps(1, protocol=0)],
    ids=["empty", "text", "bad-zip", "pickle-0"],
)
def test_what_is_not_a_payload(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.pt"
    path.write_bytes(content)
    with pytest.raises(PeekError):
        peek_file(path)


def test_a_zip_without_a_single_data_pkl(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("b/data.pkl", pickle.dumps({}, protocol=2))
    with pytest.raises(PeekError, match=r"no single data\.pkl"):
        peek_file(path)

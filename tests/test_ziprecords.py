"""The torch-free reader of zip records: the pickle `zipfile` finds, its CRC checked; what
it leaves to `zipfile` (and which `zip_pickle` still reads); broken directories. The
direct tensor reader's refusals built on it are in `test_torchzip`."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import zipfile
from typing import Any

import pytest

from flambe_compat import ziprecords
from flambe_compat.ziprecords import Unsupported, zip_pickle, zip_records

PICKLED = pickle.dumps({"w": [1, 2.5, "x"]}, protocol=2)


def record_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the records read whole from now on (tensor records are never read so)."""
    names: list[str] = []
    real_read = ziprecords.read_record

    def spy(file: Any, start: int, record: ziprecords.ZipRecord) -> bytes:
        names.append(record.name)
        return real_read(file, start, record)

    monkeypatch.setattr(ziprecords, "read_record", spy)
    return names


def zipped(method: int = zipfile.ZIP_STORED, comment: bytes = b"", **records: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        archive.writestr("archive/data.pkl", PICKLED)
        for name, data in records.items():
            archive.writestr(f"archive/{name}", data)
        archive.comment = comment
    return buffer.getvalue()


def test_the_pickle_is_the_one_zipfile_reads_from_any_offset() -> None:
    file = io.BytesIO(b"prefix" + zipped(version=b"3\n"))
    file.seek(6)
    assert zip_pickle(file) == PICKLED
    file.seek(6)
    records = zip_records(file, 6, len(file.getvalue()) - 6)
    assert sorted(records) == ["archive/data.pkl", "archive/version"]
    assert records["archive/version"].size == 2


@pytest.mark.parametrize(
    "data, reason",
    [
        (zipped(zipfile.ZIP_DEFLATED), "compressed"),
        (zipped(comment=b"hello"), "comment"),
    ],
    ids=["deflated", "comment"],
)
def test_what_it_does_not_take_is_read_by_zipfile(data: bytes, reason: str) -> None:
    with pytest.raises(Unsupported, match=reason):
        zip_records(io.BytesIO(data), 0, len(data))
    assert zip_pickle(io.BytesIO(data)) == PICKLED


def test_a_corrupted_pickle_fails_its_crc() -> None:
    data = bytearray(zipped())
    at = data.index(b"x", data.index(PICKLED[:4]))
    data[at] ^= 0xFF
    with pytest.raises(zipfile.BadZipFile, match="CRC"):
        zip_pickle(io.BytesIO(data))


@pytest.mark.parametrize(
    "cut",
    [
        lambda data: data[:10],
        lambda data: data[: data.rindex(b"PK\x01\x02") + 8] + data[data.rindex(b"PK\x05\x06") :],
    ],
    ids=["short", "truncated-directory"],
)
def test_a_broken_directory_is_refused(cut: object) -> None:
    data = cut(zipped(version=b"3\n"))  # type: ignore[operator]
    with pytest.raises(zipfile.BadZipFile):
        zip_pickle(io.BytesIO(data))


def test_two_pickles_are_refused() -> None:
    buffer = io.BytesIO(zipped())
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("other/data.pkl", PICKLED)
    with pytest.raises(pickle.UnpicklingError, match="single"):
        zip_pickle(io.BytesIO(buffer.getvalue()))


def test_it_needs_no_torch() -> None:
    code = "import sys, flambe_compat.ziprecords; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

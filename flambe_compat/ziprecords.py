"""The records of a torch zip file, read from its central directory: torch-free.

`zipfile.ZipFile` builds a `ZipInfo` per record and checks more than torch writes can
hold; over an archive of hundreds of small payloads that is a large part of peeking
into them. `zip_records` parses the central directory itself, taking only zip files
as torch writes them below 4 GiB (no comment, no ZIP64, every record stored and
unencrypted, names in ASCII) and raising `Unsupported` for anything else, which the
callers hand to `zipfile` (`zip_pickle`) or to `torch.load` (`flambe_compat.torchzip`).
Both the direct reader of tensors and peeking find `data.pkl` here, by one rule
(`payload.pickle_record_name`), its CRC checked.

>>> import io, zipfile
>>> buffer = io.BytesIO()
>>> with zipfile.ZipFile(buffer, "w") as archive:
...     archive.writestr("archive/data.pkl", b"\\x80\\x02K\\x01.")
>>> zip_pickle(io.BytesIO(buffer.getvalue()))
b'\\x80\\x02K\\x01.'
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from typing import IO, NamedTuple

from .payload import pickle_record, pickle_record_name

LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
"""A zip local file header: the data of a record starts after it, its name and extra."""
LOCAL_MAGIC = b"PK\x03\x04"
CENTRAL_HEADER = struct.Struct("<4sHHHHHHIIIHHHHHII")
END_OF_CENTRAL_DIRECTORY = struct.Struct("<4sHHHHIIH")
ZIP64_COUNT = 0xFFFF
ZIP64_SIZE = 0xFFFFFFFF
"""Values of the classic zip fields that say the real one is in a ZIP64 record."""
_ENCRYPTED = 1


class Unsupported(Exception):
    """A zip file this reader leaves to `zipfile` or `torch.load` (not malformed)."""


class ZipRecord(NamedTuple):
    """A stored record of the zip file, as its central directory lists it (a tuple: a
    file has a handful, and an archive of many nodes hundreds of files)."""

    name: str
    header_offset: int
    size: int
    crc: int


def zip_records(file: IO[bytes], start: int, size: int) -> dict[str, ZipRecord]:
    """The records of the zip file of `size` bytes at `start`, by name, from its central
    directory; `Unsupported` for what torch does not write below 4 GiB (see the module),
    `zipfile.BadZipFile` for a broken directory."""
    if size < END_OF_CENTRAL_DIRECTORY.size:
        raise zipfile.BadZipFile("too short for a zip file")
    file.seek(start + size - END_OF_CENTRAL_DIRECTORY.size)
    end = END_OF_CENTRAL_DIRECTORY.unpack(file.read(END_OF_CENTRAL_DIRECTORY.size))
    magic, disk, first_disk, on_disk, count, directory_size, directory_offset, comment = end
    if magic != b"PK\x05\x06" or comment or ZIP64_COUNT in (on_disk, count):
        raise Unsupported("a zip file with a comment, ZIP64 records or no end record last")
    if disk or first_disk or on_disk != count:
        raise zipfile.BadZipFile("a zip file spanning several disks")
    if directory_offset + directory_size > size - END_OF_CENTRAL_DIRECTORY.size:
        raise zipfile.BadZipFile("the central directory lies past the end of the file")
    file.seek(start + directory_offset)
    directory = file.read(directory_size)
    records: dict[str, ZipRecord] = {}
    at = 0
    for _ in range(count):
        fields = directory[at : at + CENTRAL_HEADER.size]
        if len(fields) != CENTRAL_HEADER.size or fields[:4] != b"PK\x01\x02":
            raise zipfile.BadZipFile("a truncated or broken central directory")
        (_, _, _, flags, method, _, _, crc, stored, inflated,
         name_length, extra_length, comment_length, _, _, _, offset,
         ) = CENTRAL_HEADER.unpack(fields)  # fmt: skip
        at += CENTRAL_HEADER.size
        encoded = directory[at : at + name_length]
        at += name_length + extra_length + comment_length
        if method != zipfile.ZIP_STORED or flags & _ENCRYPTED or ZIP64_SIZE in (stored, offset):
            raise Unsupported("compressed, encrypted or ZIP64 records")
        if stored != inflated or offset + stored > directory_offset:
            raise zipfile.BadZipFile(f"record {encoded!r:.80} does not fit in the file")
        if not encoded.isascii():
            raise Unsupported("record names outside ASCII")
        name = encoded.decode("ascii")
        if name in records:  # readers disagree on which one counts
            raise zipfile.BadZipFile(f"two records named {name!r:.80}")
        records[name] = ZipRecord(name, offset, stored, crc)
    return records


def data_offset(file: IO[bytes], start: int, record: ZipRecord) -> int:
    """Where a record's bytes start, from its local header (its extra field pads them)."""
    file.seek(start + record.header_offset)
    header = file.read(LOCAL_HEADER.size)
    if len(header) != LOCAL_HEADER.size or header[:4] != LOCAL_MAGIC:
        raise zipfile.BadZipFile(f"bad local header for record {record.name}")
    name_length, extra_length = LOCAL_HEADER.unpack(header)[9:]
    if file.read(name_length) != record.name.encode("ascii"):
        raise zipfile.BadZipFile(f"record {record.name} names itself otherwise in its header")
    return int(record.header_offset + LOCAL_HEADER.size + name_length + extra_length)


def read_record(file: IO[bytes], start: int, record: ZipRecord) -> bytes:
    """The bytes of a (small) record."""
    file.seek(start + data_offset(file, start, record))
    data = file.read(record.size)
    if len(data) != record.size:
        raise zipfile.BadZipFile(f"record {record.name} ends past the file")
    return data


def pickle_of(file: IO[bytes], start: int, records: dict[str, ZipRecord]) -> tuple[bytes, str]:
    """The pickle of a torch zip file, its CRC checked (torch's reader checks none), and
    the prefix of its records."""
    record = records[pickle_record_name((name, r.size) for name, r in records.items())]
    pickled = read_record(file, start, record)
    if zlib.crc32(pickled) != record.crc:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {record.name!r}")
    return pickled, record.name.rpartition("/")[0]


def zip_pickle(file: IO[bytes]) -> bytes:
    """The pickle of the torch zip file `file` (from its current position), CRC checked;
    a zip file `zip_records` does not take is read by `zipfile`."""
    start = file.tell()
    size = file.seek(0, os.SEEK_END) - start
    try:
        return pickle_of(file, start, zip_records(file, start, size))[0]
    except Unsupported:
        file.seek(start)
        with zipfile.ZipFile(file) as archive:
            return pickle_record(archive)

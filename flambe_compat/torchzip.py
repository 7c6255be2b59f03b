"""Reading torch's zip format directly: one pass over a `torch.save` file, for loads.

`torch.load` pays about a millisecond per call before it reads a byte (two zip readers,
a new unpickler class, the map-location machinery): over an archive of hundreds of
small nodes that fixed cost is most of the load. This reader parses the zip once with
`zipfile` (which checks the CRC of `data.pkl`), unpickles `data.pkl` with the caller's
allow-list unpickler, and builds each storage from its record: a slice of one private
mapping of the file (`mmap`, as `torch.load(mmap=True)` does), of the bytes already in
memory, or read straight into a new storage. The tensors and values are what
`torch.load` returns for the same file.

It only takes the files it can read exactly as torch would: zip files whose records are
little-endian, stored uncompressed inside the file, of CPU storages loaded to the CPU,
and no TorchScript.
`load_zip` raises `Declined` for anything else, and the caller falls back to
`torch.load` (which refuses TorchScript under the allow-list).

>>> import io, torch
>>> from flambe_compat.unpickle import Trust, pickle_module_for
>>> buffer = io.BytesIO(); torch.save({"w": torch.ones(2)}, buffer); _ = buffer.seek(0)
>>> load_zip(buffer, pickle_module_for(Trust()).Unpickler)
{'w': tensor([1., 1.])}
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import IO, Any, cast

import torch

from .payload import ZIP_MAGIC, pickle_record

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
"""A zip local file header: the data of a record starts after it, its name and extra."""
_LOCAL_MAGIC = b"PK\x03\x04"
_CPU = ("cpu", None)


class Declined(Exception):
    """The file is not one this reader takes: `torch.load` it instead (from its start)."""


def load_zip(
    file: IO[bytes] | str | os.PathLike[str] | bytearray,
    unpickler: type[pickle.Unpickler],
    map_location: Any = None,
    mmap: bool = False,
) -> Any:
    """The value of the torch zip file `file` (a path, a binary file at its start, or a
    whole file in memory), unpickled by `unpickler`; raises `Declined` (with `file` back at
    its start) for a file this reader does not take.

    Tensors share the memory of a `bytearray` given; `mmap` maps a file given by path
    privately, so tensor bytes are read when used.
    Malformed files raise `pickle.UnpicklingError`, `zipfile.BadZipFile` or `ValueError`.
    """
    if not _on_cpu(map_location):
        raise Declined("tensors are mapped to another device")
    if isinstance(file, (str, os.PathLike)):
        path = Path(file)
        with path.open("rb") as opened:
            if mmap:
                return _load(opened, unpickler, _mapped(path, opened))
            return _load(opened, unpickler, None)
    if isinstance(file, bytearray):
        whole = torch.frombuffer(file, dtype=torch.uint8).untyped_storage() if file else None
        return _load(io.BytesIO(file), unpickler, whole)
    return _load(file, unpickler, None)


def _on_cpu(map_location: Any) -> bool:
    if map_location in _CPU:
        return True
    return isinstance(map_location, torch.device) and map_location.type == "cpu"


def _mapped(path: Path, opened: IO[bytes]) -> torch.UntypedStorage | None:
    size = os.fstat(opened.fileno()).st_size
    if size == 0:
        return None
    return cast(torch.UntypedStorage, torch.UntypedStorage.from_file(os.fspath(path), False, size))


class _StorageType:
    """What a pickled storage class (`torch.FloatStorage`) stands for: its dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _storage_type(name: str) -> _StorageType | None:
    try:
        return _StorageType(torch.serialization.StorageType(name).dtype)  # type: ignore[no-untyped-call]
    except KeyError:
        return None


def _load(
    file: IO[bytes], unpickler: type[pickle.Unpickler], whole: torch.UntypedStorage | None
) -> Any:
    start = file.tell()
    head = file.read(len(ZIP_MAGIC))
    size = file.seek(0, os.SEEK_END) - start
    file.seek(start)
    if head != ZIP_MAGIC:
        raise Declined("not a zip file")
    with zipfile.ZipFile(file) as archive:
        records = {info.filename: info for info in archive.infolist()}
        for info in records.values():
            if info.file_size > size:  # only a compressed record can: torch inflates it whole
                raise pickle.UnpicklingError(
                    f"zip record {info.filename!r} inflates to {info.file_size} bytes, more "
                    f"than the whole {size}-byte file (a zip bomb?)"
                )
        pickled = pickle_record(archive)  # raises unless exactly one; CRC checked
        prefix = next(n for n in records if n.endswith("/data.pkl")).rpartition("/")[0]
        byteorder = records.get(f"{prefix}/byteorder")
        if f"{prefix}/constants.pkl" in records or (
            byteorder is not None and archive.read(byteorder) != b"little"
        ):
            file.seek(start)
            raise Declined("TorchScript, or big-endian records")
    storages: dict[str, torch.storage.TypedStorage] = {}

    def storage(dtype: torch.dtype, key: str, numel: int) -> torch.storage.TypedStorage:
        info = records.get(f"{prefix}/data/{key}")
        if info is None:
            raise pickle.UnpicklingError(f"no record {prefix}/data/{key} for a storage")
        nbytes = numel * dtype.itemsize
        if info.compress_type != zipfile.ZIP_STORED or info.file_size < nbytes:
            raise pickle.UnpicklingError(f"record {info.filename} is not {nbytes} stored bytes")
        offset = start + _data_offset(file, start, info)
        if whole is not None:
            if offset + nbytes > whole.nbytes():
                raise pickle.UnpicklingError(f"record {info.filename} ends past the file")
            untyped = whole[offset : offset + nbytes]
        else:
            untyped = _read_record(file, offset, nbytes, info.filename)
        return torch.storage.TypedStorage(  # type: ignore[no-untyped-call]
            wrap_storage=untyped, dtype=dtype, _internal=True
        )

    class ZipUnpickler(unpickler):  # type: ignore[valid-type,misc]
        def find_class(self, module: str, name: str) -> Any:
            if module == "torch" and "Storage" in name:
                found = _storage_type(name)
                if found is not None:
                    return found
            return super().find_class(module, name)

        def persistent_load(self, saved_id: Any) -> Any:
            if not (isinstance(saved_id, tuple) and len(saved_id) == 5):
                raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r:.80}")
            kind, storage_type, key, location, numel = saved_id
            if kind != "storage" or not isinstance(key, str) or not isinstance(numel, int):
                raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r:.80}")
            if location != "cpu":
                raise Declined(f"a storage on {location!r:.40}: torch.load restores it there")
            if storage_type is torch.UntypedStorage:
                dtype = torch.uint8
            elif isinstance(storage_type, _StorageType):
                dtype = storage_type.dtype
            else:
                raise pickle.UnpicklingError(f"{storage_type!r:.80} is not a storage type")
            if key not in storages:
                storages[key] = storage(dtype, key, numel)
            return storages[key]

    try:
        value = ZipUnpickler(io.BytesIO(pickled)).load()
    except Declined:
        file.seek(start)
        raise
    torch._utils._validate_loaded_sparse_tensors()  # type: ignore[no-untyped-call]
    return value


def _data_offset(file: IO[bytes], start: int, info: zipfile.ZipInfo) -> int:
    """Where a record's bytes start, from its local header (its extra field pads them)."""
    file.seek(start + info.header_offset)
    header = file.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
        raise zipfile.BadZipFile(f"bad local header for record {info.filename}")
    name_length, extra_length = _LOCAL_HEADER.unpack(header)[9:]
    return int(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)


def _read_record(file: IO[bytes], offset: int, nbytes: int, name: str) -> torch.UntypedStorage:
    """A record's bytes read straight into a new storage."""
    buffer = torch.empty(nbytes, dtype=torch.uint8)
    file.seek(offset)
    if nbytes and file.readinto(cast(Any, buffer.numpy())) != nbytes:  # type: ignore[attr-defined]
        raise pickle.UnpicklingError(f"record {name} ends past the file")
    return buffer.untyped_storage()

"""torch's zip format read and written directly: one pass over a `torch.save` file.

`torch.load` pays about a millisecond per call before it reads a byte (two zip readers,
a new unpickler class, the map-location machinery): over an archive of hundreds of
small nodes that fixed cost is most of the load. This reader parses the zip's central
directory once itself (`flambe_compat.ziprecords`), checks the CRC of `data.pkl`,
unpickles it with the caller's allow-list unpickler, and builds each storage from its
record: a slice of one private mapping of the file (`mmap`, as `torch.load(mmap=True)`
does), of the bytes already in memory, or read straight into a new storage. The tensors
and values are what `torch.load` returns for the same file.

`plan_zip(value).write(file)` writes what `torch.save` writes (the same records, tensor
data aligned to 64 bytes for memory mapping, so `torch.load(weights_only=True,
mmap=True)` reads it) in one sequential pass that a hashing file can follow, without
`torch.save`'s fixed cost, and with a CRC fast enough (ISA-L's) to keep up with the
writes; the plan knows the file's size before it is written.

`load_zip` only takes the files it can read exactly as torch would: zip files as torch
writes them below 4 GiB (those `ziprecords` takes), whose records are little-endian, of
CPU storages loaded to the CPU outside a fake tensor mode, and no TorchScript.
`load_zip` raises `Declined` for anything else, and the caller falls back to
`torch.load` (which refuses TorchScript under the allow-list).

>>> import io, torch
>>> from flambe_compat.unpickle import Trust, pickle_module_for
>>> buffer = io.BytesIO(); plan_zip({"w": torch.ones(2)}).write(buffer); _ = buffer.seek(0)
>>> torch.load(buffer, weights_only=True)
{'w': tensor([1., 1.])}
>>> load_zip(bytearray(buffer.getvalue()), pickle_module_for(Trust()).Unpickler)
{'w': tensor([1., 1.])}
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import struct
import sys
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import IO, Any, cast

import torch
from isal import isal_zlib

from .payload import ZIP_MAGIC
from .ziprecords import (
    CENTRAL_HEADER,
    END_OF_CENTRAL_DIRECTORY,
    LOCAL_HEADER,
    LOCAL_MAGIC,
    Unsupported,
    data_offset,
    pickle_of,
    read_record,
    zip_records,
)

_CPU = ("cpu", None)


StorageLoader = Callable[[torch.dtype, str, int], torch.storage.TypedStorage]
"""Builds the storage of a record: dtype, record key, number of elements."""


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
    if torch._guards.detect_fake_mode(None) is not None:
        raise Declined("a fake tensor mode is active: torch.load makes fake tensors")
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
    try:
        records = zip_records(file, start, size)
    except Unsupported as error:
        file.seek(start)
        raise Declined(str(error)) from None
    pickled, prefix = pickle_of(file, start, records)
    byteorder = records.get(f"{prefix}/byteorder")
    if f"{prefix}/constants.pkl" in records or (
        byteorder is not None and read_record(file, start, byteorder) != b"little"
    ):
        file.seek(start)
        raise Declined("TorchScript, or big-endian records")

    def storage(dtype: torch.dtype, key: str, numel: int) -> torch.storage.TypedStorage:
        record = records.get(f"{prefix}/data/{key}")
        if record is None:
            raise pickle.UnpicklingError(f"no record {prefix}/data/{key} for a storage")
        nbytes = numel * dtype.itemsize
        if record.size < nbytes:
            raise pickle.UnpicklingError(f"record {record.name} is not {nbytes} stored bytes")
        offset = start + data_offset(file, start, record)
        if offset + nbytes > start + size:
            raise pickle.UnpicklingError(f"record {record.name} ends past the file")
        if whole is not None:
            untyped = whole[offset : offset + nbytes]
        else:
            untyped = _read_storage(file, offset, nbytes, record.name)
        return torch.storage.TypedStorage(  # type: ignore[no-untyped-call]
            wrap_storage=untyped, dtype=dtype, _internal=True
        )

    try:
        reader = _zip_unpickler(unpickler)  # type: ignore[arg-type]  # classes hash by identity
        value = reader(io.BytesIO(pickled), storage).load()
    except Declined:
        file.seek(start)
        raise
    torch._utils._validate_loaded_sparse_tensors()  # type: ignore[no-untyped-call]
    return value


@functools.lru_cache(maxsize=64)
def _zip_unpickler(
    unpickler: type[pickle.Unpickler],
) -> Callable[[IO[bytes], StorageLoader], pickle.Unpickler]:
    """`unpickler` reading a torch zip file's pickle: storage classes stand for their dtype,
    persistent ids for storages built by the loader it is given (one class per policy)."""

    class ZipUnpickler(unpickler):  # type: ignore[valid-type,misc]
        def __init__(self, file: IO[bytes], storage: StorageLoader) -> None:
            super().__init__(file)
            self._storage = storage
            self._storages: dict[str, torch.storage.TypedStorage] = {}

        def find_class(self, module: str, name: str) -> Any:
            if module == "torch" and "Storage" in name:
                found = _storage_type(name)
                if found is not None:
                    return found
            found = super().find_class(module, name)
            return _rebuild_tensor if (module, name) == _REBUILD_TENSOR else found

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
            if key not in self._storages:
                self._storages[key] = self._storage(dtype, key, numel)
            return self._storages[key]

    return ZipUnpickler


_REBUILD_TENSOR = ("torch._utils", "_rebuild_tensor_v2")


def _rebuild_tensor(
    storage: torch.storage.TypedStorage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
    backward_hooks: Any,
    metadata: Any = None,
) -> torch.Tensor:
    """`torch._utils._rebuild_tensor_v2` outside a fake tensor mode (`load_zip` declines
    to load in one): torch's looks for one per tensor, which costs more than the tensor."""
    untyped = storage._untyped_storage
    tensor = torch.empty((0,), dtype=storage.dtype, device=untyped.device)
    tensor.set_(untyped, storage_offset, size, stride)
    tensor.requires_grad = requires_grad
    if metadata:
        torch._utils.set_tensor_metadata(tensor, metadata)  # type: ignore[no-untyped-call]
    tensor._backward_hooks = backward_hooks
    return tensor


def _read_storage(file: IO[bytes], offset: int, nbytes: int, name: str) -> torch.UntypedStorage:
    """A record's bytes read straight into a new storage."""
    buffer = torch.empty(nbytes, dtype=torch.uint8)
    file.seek(offset)
    if nbytes and file.readinto(cast(Any, buffer.numpy())) != nbytes:  # type: ignore[attr-defined]
        raise pickle.UnpicklingError(f"record {name} ends past the file")
    return buffer.untyped_storage()


_ALIGNMENT = 64
"""torch's storage alignment: record data starts at a multiple of it, for `mmap`."""
_PADDING_FIELD = b"FB"
"""The id of the extra field that pads a local header (torch's own choice)."""
_STORED_VERSION = 20
_DOS_DATE = (1 << 5) | 1  # 1980-01-01: zip's first date
MAX_ZIP_BYTES = (1 << 32) - (1 << 24)
"""Files this writer keeps below (no ZIP64 records); larger payloads go to `torch.save`."""
_ARCHIVE_PREFIX = "archive"
"""The folder torch names the records of a file written to a buffer."""
_FORMAT_RECORDS = ((".format_version", b"1"), (".storage_alignment", b"64"))
_DATA_DESCRIPTOR = 1 << 3
"""The flag of a record whose CRC and sizes follow its bytes."""
_DESCRIPTOR = struct.Struct("<4sIII")
_DESCRIPTOR_MAGIC = b"PK\x07\x08"
_DEFERRED_CRC_BYTES = 1 << 20
"""Records at least this large have their CRC computed while they are written."""


def plan_zip(value: Any, pickle_protocol: int = 2) -> PlannedZip | None:
    """`value` pickled for its torch file, `torch.save(value, file, pickle,
    pickle_protocol)` written in one sequential pass (`PlannedZip.write`), whose size is
    known before a byte is written (a tar member announces its size first); `None` for
    a value whose tensors do not fit in `MAX_ZIP_BYTES`.

    The pickle is made with the standard `pickle` and torch's own reductions of tensors;
    storages on other devices are copied to the CPU as they are written and keep their
    location, as torch's. The file depends on the pickle and the tensor bytes only (no
    random id), so a value without tensors (most stashes) is built once and reused.

    >>> import io, torch
    >>> planned = plan_zip({"w": torch.ones(2)}); buffer = io.BytesIO()
    >>> planned.write(buffer); planned.size == len(buffer.getvalue())
    True
    """
    buffer = io.BytesIO()
    pickler = _StoragePickler(buffer, protocol=pickle_protocol)
    pickler.dump(value)
    pickled = buffer.getvalue()
    storages = list(pickler.storages.values())
    if sum(storage.nbytes() for _, storage in storages) >= MAX_ZIP_BYTES:
        return None
    return PlannedZip(pickled, _records(pickled, storages) if storages else [])


class PlannedZip:
    """A torch file to write (`plan_zip`): its pickle (`pickled`) and its records (none
    for a file naming no storage, whose bytes are cached whole)."""

    def __init__(self, pickled: bytes, records: list[_Record]) -> None:
        self.pickled = pickled
        self._records = records

    @functools.cached_property
    def size(self) -> int:
        """The length of the file, computed on demand from the records' sizes."""
        return _zip_size(self._records) if self._records else len(_plain_file(self.pickled))

    def write(self, file: IO[bytes], executor: Executor | None = None) -> None:
        """Write the file; with `executor`, the CRC of large records is computed there
        while they are written."""
        if self._records:
            _write_zip(file, self._records, executor)
        else:
            file.write(_plain_file(self.pickled))


class _StoragePickler(pickle.Pickler):
    """torch's pickling of storages: each one becomes a persistent id naming its record."""

    def __init__(self, file: IO[bytes], protocol: int) -> None:
        super().__init__(file, protocol=protocol)
        self.storages: dict[int, tuple[str, torch.UntypedStorage]] = {}
        self._dtypes: dict[int, torch.dtype] = {}

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, torch.storage.TypedStorage):
            storage, dtype = obj._untyped_storage, obj.dtype
            storage_type: Any = getattr(torch, obj._pickle_storage_type())  # type: ignore[no-untyped-call]
            numel = obj._size()  # type: ignore[no-untyped-call]
        elif isinstance(obj, torch.UntypedStorage):
            storage, dtype = obj, torch.uint8
            storage_type, numel = torch.UntypedStorage, obj.nbytes()
        else:
            return None
        allocated = storage.device.type != "meta" and storage.data_ptr() != 0
        if allocated and self._dtypes.setdefault(storage.data_ptr(), dtype) != dtype:
            raise RuntimeError(
                "Cannot save multiple tensors or storages that view the same data "
                "as different types"
            )
        key, _ = self.storages.setdefault(storage._cdata, (str(len(self.storages)), storage))
        location = torch.serialization.location_tag(storage)
        return ("storage", storage_type, key, location, numel)


@functools.lru_cache(maxsize=64)
def _plain_file(pickled: bytes) -> bytes:
    """The whole torch file of a pickle that names no storage."""
    buffer = io.BytesIO()
    _write_zip(buffer, _records(pickled, []))
    return buffer.getvalue()


_Record = tuple[str, "bytes | torch.UntypedStorage"]


def _records(pickled: bytes, storages: list[tuple[str, torch.UntypedStorage]]) -> list[_Record]:
    """The records of a torch file, in torch's order: the pickle, the format's own, each
    storage's bytes, the version and a serialization id (the pickle's CRC, not random)."""
    return [
        ("data.pkl", pickled),
        *_FORMAT_RECORDS,
        ("byteorder", sys.byteorder.encode()),
        *((f"data/{key}", storage) for key, storage in storages),
        ("version", b"3\n"),
        (".data/serialization_id", f"{isal_zlib.crc32(pickled):040d}".encode()),
    ]


def _write_zip(file: IO[bytes], records: list[_Record], executor: Executor | None = None) -> None:
    writer = _ZipWriter(file, _ARCHIVE_PREFIX, executor)
    for name, data in records:
        writer.add(name, data if isinstance(data, bytes) else _bytes_of(data))
    writer.finish()


def _zip_size(records: list[_Record]) -> int:
    """The size of the file `_ZipWriter` makes of `records`, from their sizes alone."""
    end = directory = 0
    for name, data in records:
        encoded = _record_name(_ARCHIVE_PREFIX, name)
        size = len(data) if isinstance(data, bytes) else data.nbytes()
        end += _record_bytes(end, encoded, size)
        directory += CENTRAL_HEADER.size + len(encoded)
    return end + directory + END_OF_CENTRAL_DIRECTORY.size


def _bytes_of(storage: torch.UntypedStorage) -> memoryview:
    """The bytes of a storage, copied to the CPU if it lives elsewhere."""
    if storage.device.type != "cpu":
        storage = storage.cpu()  # type: ignore[no-untyped-call]
    if storage.nbytes() == 0:
        return memoryview(b"")
    tensor = torch.empty(0, dtype=torch.uint8).set_(storage)
    return memoryview(cast(Any, tensor.numpy())).cast("B")


class _ZipWriter:
    """A zip file of stored records written front to back, then its central directory.

    A small record's local header carries its CRC and sizes. A large one's (`_deferred`)
    header defers them to a data descriptor after its bytes (general purpose flag bit
    3), as zip allows and torch's reader and `zipfile` read: its CRC is computed on
    `executor` (when given) while the bytes are written. The layout depends on the
    records' names and sizes alone (`_zip_size`).
    """

    def __init__(self, file: IO[bytes], prefix: str, executor: Executor | None = None) -> None:
        # a HashedFile may hash tensor bytes after the write: they stay as they are
        self._write_to = getattr(file, "write_kept", file.write)
        self._prefix = prefix
        self._executor = executor
        self._offset = 0
        self._central: list[bytes] = []

    def add(self, name: str, data: bytes | memoryview) -> None:
        encoded = _record_name(self._prefix, name)
        size = len(data)
        offset = self._offset
        extra = _extra_field(offset, encoded)
        flags = _DATA_DESCRIPTOR if _deferred(size) else 0
        if flags:
            executor = self._executor
            crc_of_data = None if executor is None else executor.submit(isal_zlib.crc32, data)
            self._write(_local_header(flags, 0, 0, encoded, extra))
            self._write(data)
            crc = isal_zlib.crc32(data) if crc_of_data is None else crc_of_data.result()
            self._write(_DESCRIPTOR.pack(_DESCRIPTOR_MAGIC, crc, size, size))
        else:
            crc = isal_zlib.crc32(data)
            self._write(_local_header(flags, crc, size, encoded, extra))
            self._write(data)
        central = CENTRAL_HEADER.pack(
            b"PK\x01\x02", _STORED_VERSION, _STORED_VERSION, flags, 0, 0, _DOS_DATE, crc,
            size, size, len(encoded), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        self._central.append(central + encoded)

    def finish(self) -> None:
        directory = b"".join(self._central)
        count = len(self._central)
        end = END_OF_CENTRAL_DIRECTORY.pack(
            b"PK\x05\x06", 0, 0, count, count, len(directory), self._offset, 0
        )
        self._write(directory + end)

    def _write(self, data: bytes | memoryview) -> None:
        self._write_to(data)
        self._offset += len(data)


@functools.lru_cache(maxsize=256)
def _record_name(prefix: str, name: str) -> bytes:
    return f"{prefix}/{name}".encode()


def _deferred(size: int) -> bool:
    """Whether a record's CRC follows its bytes, in a data descriptor."""
    return size >= _DEFERRED_CRC_BYTES


def _record_bytes(offset: int, encoded: bytes, size: int) -> int:
    """The length of a record starting at `offset`: header, padding, bytes, descriptor."""
    descriptor = _DESCRIPTOR.size if _deferred(size) else 0
    header = LOCAL_HEADER.size + len(encoded) + len(_extra_field(offset, encoded))
    return header + size + descriptor


def _extra_field(offset: int, encoded: bytes) -> bytes:
    """The padding in the header of a record named `encoded` starting at `offset`, which
    puts its data on a multiple of 64."""
    return _padding((offset + LOCAL_HEADER.size + len(encoded)) % _ALIGNMENT)


@functools.lru_cache(maxsize=_ALIGNMENT)
def _padding(remainder: int) -> bytes:
    """The extra field that moves data starting `remainder` bytes past a multiple of 64
    to the next one (built once per remainder: a save adds thousands of records)."""
    padding = -remainder % _ALIGNMENT
    if 0 < padding < 4:  # an extra field needs 4 bytes of its own header
        padding += _ALIGNMENT
    return _PADDING_FIELD + struct.pack("<H", padding - 4) + bytes(padding - 4) if padding else b""


def _local_header(flags: int, crc: int, size: int, encoded: bytes, extra: bytes) -> bytes:
    fields = LOCAL_HEADER.pack(
        LOCAL_MAGIC, _STORED_VERSION, flags, 0, 0, _DOS_DATE, crc, size, size,
        len(encoded), len(extra),
    )  # fmt: skip
    return fields + encoded + extra

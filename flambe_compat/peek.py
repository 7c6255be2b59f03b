"""Peeking into payloads: a torch file's keys, metadata and tensor shapes, not its tensor bytes.

Validation and `inspect` read what a payload holds through the same allow-list as
loading, with two differences: tensors become `TensorInfo` records (dtype, shape) built
from the pickle alone, so no storage byte is read, and a global outside the allow-list
becomes an inert stand-in recorded in `Peeked.unsafe_globals` instead of an error, so
one pass reports everything a payload would need. Nothing outside the allow-list runs.

>>> from pathlib import Path
>>> peeked = peek_file(Path("fixtures/flambe-corpus/0.4.18-zip/mlp-dir/state.pt"))
>>> peeked.value["net.0.weight"], peeked.unsafe_globals
(TensorInfo(dtype='float32', shape=(8, 4)), [])
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from .detect import file_payload_format, payload_format
from .unpickle import allow_list_unpickler, allowed_globals

MAX_PICKLE_BYTES = 256 << 20
"""A `data.pkl` record larger than this is refused before it is read (tensors live outside)."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as its pickle describes it: dtype name and shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for size in self.shape:
            numel *= size
        return numel * torch.empty((), dtype=getattr(torch, self.dtype)).element_size()


@dataclass(frozen=True)
class _StorageInfo:
    dtype: torch.dtype


class Opaque:
    """Stand-in for a global outside the allow-list: accepts any arguments and state."""

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Opaque:
        return type(self)()

    def __repr__(self) -> str:
        return f"<{self.qualified_name}>"


class PeekError(Exception):
    """A payload could not be peeked into; `unsafe_globals` are those met before the error."""

    def __init__(self, error: BaseException, unsafe_globals: list[str]) -> None:
        super().__init__(f"{type(error).__name__}: {' '.join(str(error).split())[:300]}")
        self.unsafe_globals = unsafe_globals


@dataclass
class Peeked:
    """What a payload holds, and the globals it names that the allow-list refuses."""

    value: Any
    unsafe_globals: list[str] = field(default_factory=list)


def peek_file(path: Path) -> Peeked:
    """Peek into a `torch.save` file (zip or legacy) or a bare pickle; `PeekError` if it
    cannot be read."""
    kind = file_payload_format(path)
    with path.open("rb") as file:
        return _peek(file, kind)


def _peek(file: IO[bytes], kind: str) -> Peeked:
    found: list[str] = []
    try:
        if kind == "zip":
            return Peeked(_peek_zip(file, found), found)
        if kind == "legacy":
            return Peeked(_peek_legacy(file, found), found)
        if kind == "pickle":
            return Peeked(_unpickler(found)(file).load(), found)
        raise pickle.UnpicklingError("neither a torch file (zip or legacy) nor a pickle")
    except PeekError:
        raise
    except (Exception, RecursionError, MemoryError) as error:
        raise PeekError(error, found) from error


def _peek_zip(file: IO[bytes], found: list[str]) -> Any:
    with zipfile.ZipFile(file) as archive:
        records = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(records) != 1:
            raise pickle.UnpicklingError("the zip file has no single data.pkl record")
        if archive.getinfo(records[0]).file_size > MAX_PICKLE_BYTES:
            raise pickle.UnpicklingError(f"data.pkl is larger than {MAX_PICKLE_BYTES} bytes")
        data = archive.read(records[0])
    unpickler = _unpickler(found)(io.BytesIO(data))
    unpickler.persistent_load = _zip_storage  # type: ignore[method-assign]
    return unpickler.load()


def _peek_legacy(file: IO[bytes], found: list[str]) -> Any:
    plain = _unpickler(found)
    plain(file).load()  # magic number
    plain(file).load()  # protocol version
    plain(file).load()  # system info
    unpickler = plain(file)
    unpickler.persistent_load = _legacy_storage  # type: ignore[method-assign]
    return unpickler.load()


def _zip_storage(saved_id: Any) -> _StorageInfo:
    return _storage(saved_id[1])


def _legacy_storage(saved_id: Any) -> Any:
    if saved_id[0] == "module":
        return saved_id[1]
    return _storage(saved_id[1])


def _storage(storage_type: Any) -> _StorageInfo:
    if storage_type is torch.UntypedStorage:
        return _StorageInfo(torch.uint8)
    dtype = getattr(storage_type, "dtype", torch.uint8)
    if not isinstance(dtype, torch.dtype):
        raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
    return _StorageInfo(dtype)


def _tensor_info(storage: Any, offset: int, size: Any, *args: Any) -> TensorInfo:
    """`_rebuild_tensor`, `_v2` and `_v3` (its 7th argument: the dtype of an untyped storage)."""
    if not isinstance(storage, _StorageInfo):
        raise pickle.UnpicklingError("a tensor is rebuilt from something that is not a storage")
    dtype = args[3] if len(args) > 3 and isinstance(args[3], torch.dtype) else storage.dtype
    return TensorInfo(str(dtype).removeprefix("torch."), tuple(int(s) for s in size))


def _sparse_info(layout: Any, data: Any) -> TensorInfo:
    """`_rebuild_sparse_tensor`: the dtype of the values, the size given last."""
    values = [item for item in data if isinstance(item, TensorInfo)]
    sizes = [
        item
        for item in data
        if isinstance(item, (tuple, list)) and all(isinstance(n, int) for n in item)
    ]
    if not values or not sizes:
        raise pickle.UnpicklingError("a sparse tensor without values or size")
    return TensorInfo(values[-1].dtype, tuple(sizes[-1]))


def _first_argument(data: Any, *args: Any) -> Any:
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    return func(*args)


def _peek_nested(found: list[str], data: bytes) -> Any:
    """A nested torch file (`torch.storage._load_from_bytes`); its refused globals are ours."""
    nested = _peek(io.BytesIO(data), payload_format(data[:512]))
    found.extend(name for name in nested.unsafe_globals if name not in found)
    return nested.value


def _unpickler(found: list[str]) -> type[pickle.Unpickler]:
    allowed = dict(allowed_globals())
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"):
        allowed[f"torch._utils.{name}"] = _tensor_info
    for name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
        allowed[f"torch._utils.{name}"] = _first_argument
    allowed["torch._tensor._rebuild_from_type_v2"] = _rebuild_from_type
    allowed["torch._utils._rebuild_sparse_tensor"] = _sparse_info
    allowed["torch.storage._load_from_bytes"] = lambda data: _peek_nested(found, data)
    for name in (
        "FloatStorage",
        "DoubleStorage",
        "HalfStorage",
        "BFloat16Storage",
        "LongStorage",
        "IntStorage",
        "ShortStorage",
        "CharStorage",
        "ByteStorage",
        "BoolStorage",
        "ComplexFloatStorage",
        "ComplexDoubleStorage",
    ):
        allowed[f"torch.{name}"] = torch.serialization.StorageType(name)  # type: ignore[no-untyped-call]
    allowed["torch.UntypedStorage"] = torch.UntypedStorage

    def stand_in(qualified_name: str) -> type[Opaque]:
        if qualified_name not in found:
            found.append(qualified_name)
        return type(qualified_name, (Opaque,), {"qualified_name": qualified_name})

    return allow_list_unpickler(allowed, on_unknown=stand_in)

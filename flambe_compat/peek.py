"""Peeking into payloads: a torch file's keys, metadata and tensor shapes, not its tensor bytes.

Validation and `inspect` read what a payload holds through the same allow-list as
loading, with two differences: tensors become `TensorInfo` records (dtype, shape) built
from the pickle alone, so no storage byte is read, and a global outside the allow-list
becomes an inert stand-in recorded in `Peeked.unsafe_globals` instead of an error, so
one pass reports everything a payload would need. Nothing outside the allow-list runs.
torch's tensor, storage and dtype names are read by stand-ins: peeking a state of
tensors does not import torch (other torch names on the allow-list do).

>>> from flambe_compat.payload import read_payload_file
>>> path = Path("fixtures/flambe-corpus/0.4.18-zip/mlp-dir/state.pt")
>>> peeked = peek(read_payload_file(path, path.stat().st_size))
>>> peeked.value["net.0.weight"], peeked.unsafe_globals
(TensorInfo(dtype='float32', shape=(8, 4)), [])
"""

from __future__ import annotations

import functools
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .payload import HEAD_SIZE, PayloadFile, payload_format, read_payload_file
from .unpickle import allow_list_unpickler, globals_for, plain_globals
from .ziprecords import zip_pickle

ITEM_SIZES = {
    **dict.fromkeys(("bool", "int8", "uint8", "qint8", "quint8", "quint4x2", "quint2x4"), 1),
    **dict.fromkeys(("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"), 1),
    **dict.fromkeys(("float16", "bfloat16", "int16", "uint16"), 2),
    **dict.fromkeys(("float32", "int32", "uint32", "qint32", "complex32"), 4),
    **dict.fromkeys(("float64", "int64", "uint64", "complex64"), 8),
    "complex128": 16,
}
"""Bytes per element of each torch dtype, by name."""
_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}
_LAYOUTS = ("strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc")


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
        return numel * ITEM_SIZES[self.dtype]


@dataclass(frozen=True)
class _StorageInfo:
    dtype: str


@dataclass(frozen=True)
class _TorchName:
    """A torch dtype or layout, by name (`torch.float32`), standing in for the object."""

    name: str

    def __str__(self) -> str:
        return f"torch.{self.name}"


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
    return peek(read_payload_file(path, path.stat().st_size))


def peek(payload: PayloadFile) -> Peeked:
    """`peek_file` of a payload already sniffed (and, when small, read)."""
    with payload.open() as file:
        return _peek(file, payload.format)


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
    unpickler = _unpickler(found)(io.BytesIO(zip_pickle(file)))
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
    if isinstance(storage_type, _StorageInfo):
        return storage_type
    dtype = getattr(storage_type, "dtype", None)  # a storage type of the real torch
    if dtype is None:
        raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
    return _StorageInfo(str(dtype).removeprefix("torch."))


def _tensor_info(storage: Any, offset: int, size: Any, *args: Any) -> TensorInfo:
    """`_rebuild_tensor`, `_v2` and `_v3` (its 7th argument: the dtype of an untyped storage)."""
    if not isinstance(storage, _StorageInfo):
        raise pickle.UnpicklingError("a tensor is rebuilt from something that is not a storage")
    dtype = args[3].name if len(args) > 3 and isinstance(args[3], _TorchName) else storage.dtype
    return TensorInfo(dtype, tuple(int(s) for s in size))


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
    nested = _peek(io.BytesIO(data), payload_format(data[:HEAD_SIZE]))
    found.extend(name for name in nested.unsafe_globals if name not in found)
    return nested.value


@functools.cache
def _stand_ins() -> dict[str, Any]:
    """What peeking resolves torch's tensor, storage, dtype and layout names to (but for
    `torch.storage._load_from_bytes`: see `_unpickler`), and the allow-list without torch."""
    stand_ins: dict[str, Any] = dict(plain_globals())
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"):
        stand_ins[f"torch._utils.{name}"] = _tensor_info
    for name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
        stand_ins[f"torch._utils.{name}"] = _first_argument
    stand_ins["torch._tensor._rebuild_from_type_v2"] = _rebuild_from_type
    stand_ins["torch._utils._rebuild_sparse_tensor"] = _sparse_info
    for name, dtype in _STORAGE_DTYPES.items():
        stand_ins[f"torch.{name}"] = _StorageInfo(dtype)
    for name in ("torch.UntypedStorage", "torch.storage.UntypedStorage"):
        stand_ins[name] = _StorageInfo("uint8")
    for name in (*ITEM_SIZES, *_LAYOUTS):
        stand_ins[f"torch.{name}"] = _TorchName(name)
    return stand_ins


def _unpickler(found: list[str]) -> type[pickle.Unpickler]:
    def stand_in(qualified_name: str) -> type[Opaque]:
        if qualified_name not in found:
            found.append(qualified_name)
        return type(qualified_name, (Opaque,), {"qualified_name": qualified_name})

    allowed = dict(_stand_ins())
    allowed["torch.storage._load_from_bytes"] = lambda data: _peek_nested(found, data)
    return allow_list_unpickler(allowed, on_unknown=stand_in, more=globals_for)

"""Unpickling payloads without running code from the archive.

The model is torch's `weights_only` loading (torch >= 2.6): a pickle may only name
globals on an allow-list (tensors, storages, torch's rebuild functions, OrderedDict,
plain containers and scalars, numpy arrays and dtypes), plus the few names real flambe
archives use: `flambe.compile.serialization.State` (remapped to ours),
`dill._dill._load_type` for harmless builtin types, and `torch.storage._load_from_bytes`
(a nested torch file, loaded by these same rules). Any other global raises
`UnsafeGlobalError`; callers turn it into a `LoadError` naming the file.

A `Trust` says what a load may do: the default allows only the list above,
`Trust(allow_globals=("mymodule.MyClass",))` adds named globals, and
`Trust(trusted=True)` unpickles like flambe did (any global: only for archives you trust).

>>> import io, pickle
>>> unpickle(io.BytesIO(pickle.dumps({"a": [1, 2.0, None]})), Trust())
{'a': [1, 2.0, None]}
>>> unpickle(io.BytesIO(pickle.dumps(print)), Trust())
Traceback (most recent call last):
...
flambe_compat.unpickle.UnsafeGlobalError: global builtins.print is not on the allow-list; ...
"""

from __future__ import annotations

import collections
import functools
import importlib
import io
import os
import pickle
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from .payload import (
    ZIP_MAGIC,
    python3_name,
    refuse_inflating_record,
    scan_pickle,
)
from .state import State
from .ziprecords import zip_pickle

LEGACY_STATE = ("flambe.compile.serialization", "State")
"""Where flambe's pickles find `State`; unpickling maps it to `flambe_compat.State`."""
MAX_NESTING = 10_000
"""Deepest nesting of values a pickle may build (CPython hashes nested tuples recursively
in C: a few megabytes of them, used as a dict key, overflow the stack and kill the process)."""
TORCHSCRIPT_LOADER = "torch.jit.load"
"""What `torch.load` hands a TorchScript zip to; refused unless trusted or allowed by name."""
MAX_RANGE = 1 << 24
"""Longest `range` a pickle may build: the one lazy value that `set()` or `tuple()` could
expand far beyond the pickle's size (`set(range(2**40))` never finishes)."""

_HARMLESS_TYPE_NAMES = {
    "set": set,
    "frozenset": frozenset,
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "str": str,
    "bytes": bytes,
    "bytearray": bytearray,
    "int": int,
    "float": float,
    "complex": complex,
    "bool": bool,
    "NoneType": type(None),
    "slice": slice,
    "range": range,
}


class UnsafeGlobalError(pickle.UnpicklingError):
    """A pickle named a global that the current `Trust` does not allow."""

    def __init__(self, qualified_name: str, detail: str = "") -> None:
        self.qualified_name = qualified_name
        reason = detail or "is not on the allow-list"
        super().__init__(
            f"global {qualified_name} {reason}; to load it anyway, pass "
            f"allow_globals=[{qualified_name!r}] if you trust that name, or trusted=True "
            "if you trust the whole archive (that runs any code it contains)"
        )


@dataclass(frozen=True)
class Trust:
    """What unpickling may do: the allow-list, extra allowed globals, or full trust.

    A policy only: where tensors go and whether they are memory-mapped are load options
    (`torch_load`'s `map_location` and `mmap`).
    """

    allow_globals: tuple[str, ...] = field(default=())
    trusted: bool = False

    @classmethod
    def of(cls, allow_globals: Iterable[str | Any] = (), trusted: bool = False) -> Trust:
        """A `Trust` from user arguments: names as `module.name` strings or the objects."""
        names = tuple(g if isinstance(g, str) else _qualified_name(g) for g in allow_globals)
        return cls(allow_globals=names, trusted=trusted)


def _qualified_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _load_builtin_type(name: str) -> Any:
    """dill's `_load_type`, for the harmless builtin types real archives pickle (a `set`)."""
    if name in _CHECKED_TYPES:
        return functools.partial(_CHECKED_TYPES[name])  # fresh: see `_unmodifiable`
    try:
        return _HARMLESS_TYPE_NAMES[name]
    except KeyError:
        raise UnsafeGlobalError(
            f"dill._dill._load_type({name!r})", "names a type outside the harmless builtins"
        ) from None


def _new_bytes(*args: Any) -> bytes:
    """`bytes` as pickles build it, from data they carry: never zero-filled to a size."""
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError(f"bytes({args[0]}) refused: a size, not data")
    return bytes(*args)


def _new_bytearray(*args: Any) -> bytearray:
    """`bytearray` as pickles build it, from data they carry: never zero-filled to a size
    (a 40-byte pickle could ask for 16 GiB of zeros)."""
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError(f"bytearray({args[0]}) refused: a size, not data")
    return bytearray(*args)


def _new_range(*args: int) -> range:
    """`range`, at most `MAX_RANGE` long."""
    value = range(*args)
    if len(value) > MAX_RANGE:
        raise pickle.UnpicklingError(f"{value!r} refused: longer than {MAX_RANGE}")
    return value


_CHECKED_TYPES: dict[str, Callable[..., Any]] = {
    "bytes": _new_bytes,
    "bytearray": _new_bytearray,
    "range": _new_range,
}
"""Types whose constructor a pickle could make allocate or iterate without bound: they
resolve to checked constructors (so such a type pickled as a value loads as one)."""


def _encode_latin1(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode`, as protocol 2 pickles use it for bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafeGlobalError("_codecs.encode", f"with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


@functools.cache
def plain_globals() -> dict[str, Any]:
    """The allow-list without torch's and numpy's names (importing neither)."""
    return {
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "builtins.bytes": _CHECKED_TYPES["bytes"],
        "builtins.bytearray": _CHECKED_TYPES["bytearray"],
        "builtins.complex": complex,
        "builtins.slice": slice,
        "builtins.range": _CHECKED_TYPES["range"],
        "_codecs.encode": _encode_latin1,
        "dill._dill._load_type": _load_builtin_type,
        ".".join(LEGACY_STATE): State,
        "flambe_compat.state.State": State,
    }


@functools.cache
def _torch_globals() -> dict[str, Any]:
    """torch's names on the allow-list: tensors, storages, rebuild functions, dtypes..."""
    import torch

    allowed: dict[str, Any] = {
        "torch.Size": torch.Size,
        "torch.Tensor": torch.Tensor,
        "torch.device": torch.device,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch.storage.UntypedStorage": torch.UntypedStorage,
        "torch.serialization._get_layout": torch.serialization._get_layout,
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
    }
    for name in dir(torch._utils):
        if name.startswith("_rebuild") and name != "_rebuild_xla_tensor":
            allowed[f"torch._utils.{name}"] = getattr(torch._utils, name)
    for name in dir(torch):
        value = getattr(torch, name)
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)):
            allowed[str(value)] = value
    for tensor_type in torch._tensor_classes:
        allowed[_qualified_name(tensor_type)] = tensor_type
    return allowed


_NUMPY_NAMES = ("numpy.", "dill._dill._create_array")


def globals_for(qualified_name: str) -> dict[str, Any]:
    """The part of the allow-list that may hold `qualified_name`, importing torch or numpy
    only for their own names."""
    if qualified_name.startswith("torch."):
        return _torch_globals()
    if qualified_name.startswith(_NUMPY_NAMES):
        return _numpy_globals()
    return plain_globals()


@functools.cache
def _default_globals() -> dict[str, Any]:
    """The allow-list: names a pickle may use, mapped to what they resolve to."""
    return {**plain_globals(), **_numpy_globals(), **_torch_globals()}


@functools.cache
def _numpy_globals() -> dict[str, Any]:
    """numpy arrays, scalars and dtypes, if numpy is installed (else no pickle can hold them)."""
    try:
        import numpy
    except ImportError:
        return {}
    multiarray = importlib.import_module("numpy._core.multiarray")
    allowed: dict[str, Any] = {"numpy.ndarray": numpy.ndarray, "numpy.dtype": numpy.dtype}
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[f"{module}._frombuffer"] = _frombuffer
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[f"{module}._reconstruct"] = multiarray._reconstruct
        allowed[f"{module}.scalar"] = multiarray.scalar
    allowed["dill._dill._create_array"] = functools.partial(
        _create_numpy_array, multiarray._reconstruct
    )
    for dtype_class in vars(numpy.dtypes).values():
        if isinstance(dtype_class, type) and issubclass(dtype_class, numpy.dtype):
            allowed[f"numpy.dtypes.{dtype_class.__name__}"] = dtype_class
    return allowed


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> Any:
    """numpy's `_frombuffer` (arrays pickled at protocol 5), for data dtypes only."""
    import numpy

    dtype = numpy.dtype(dtype)
    if dtype.hasobject:
        raise UnsafeGlobalError("numpy._core.numeric._frombuffer", "with an object dtype")
    return numpy.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _create_numpy_array(
    reconstruct: Any, function: Any, args: Any, state: Any, npdict: Any = None
) -> Any:
    """dill's `_create_array`, for the plain arrays dill pickles this way (numpy's own
    `_reconstruct` and no instance dictionary)."""
    if function is not reconstruct or npdict:
        raise UnsafeGlobalError(
            "dill._dill._create_array", "is only allowed for plain numpy arrays"
        )
    array = function(*args)
    array.__setstate__(state)
    return array


def _resolve(qualified_name: str) -> Any:
    module, _, name = qualified_name.rpartition(".")
    try:
        value: Any = importlib.import_module(module)
        for part in name.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError, ValueError) as error:
        raise UnsafeGlobalError(
            qualified_name, f"was allowed but cannot be found ({error})"
        ) from None
    return value


def _safe_unpickler_class(trust: Trust, map_location: Any) -> type[pickle.Unpickler]:
    allowed = dict(_default_globals())
    allowed["torch.storage._load_from_bytes"] = functools.partial(
        _load_nested_torch_file, trust, map_location
    )
    for name in trust.allow_globals:
        allowed.setdefault(name, None)
    return allow_list_unpickler(allowed)


def allow_list_unpickler(
    allowed: dict[str, Any],
    on_unknown: Callable[[str], Any] | None = None,
    more: Callable[[str], Mapping[str, Any]] | None = None,
) -> type[pickle.Unpickler]:
    """An unpickler resolving globals through `allowed` only (a `None` value: import it).

    `more(name)`, when given, is the further allow-list consulted for a name `allowed`
    lacks (so that peeking imports torch only for torch names). A global outside them
    raises `UnsafeGlobalError`, or resolves to `on_unknown(name)` when given (the peeking
    reader uses inert stand-ins).
    """

    class AllowListUnpickler(pickle.Unpickler):
        def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
            super().__init__(file, **kwargs)
            self._file = file
            self._classes: dict[type, tuple[str, dict[str, Any]]] = {}

        def load(self) -> Any:
            check_nesting(self._file)
            try:
                return super().load()
            finally:
                _restore_classes(self._classes)

        def find_class(self, module: str, name: str) -> Any:
            qualified = python3_name(module, name)
            if qualified not in allowed and more is not None:
                further = more(qualified)
                if qualified in further:
                    allowed[qualified] = further[qualified]
            if qualified not in allowed:
                if on_unknown is None:
                    raise UnsafeGlobalError(qualified)
                return on_unknown(qualified)
            if allowed[qualified] is None:
                allowed[qualified] = _resolve(qualified)
            value = allowed[qualified]
            if isinstance(value, type) and not value.__flags__ & _IMMUTABLE_TYPE:
                self._classes.setdefault(value, (qualified, dict(vars(value))))
            return _unmodifiable(value)

    return AllowListUnpickler


_IMMUTABLE_TYPE = 1 << 8
"""`Py_TPFLAGS_IMMUTABLETYPE`: builtin types, whose attributes no one can set."""


def _restore_classes(classes: dict[type, tuple[str, dict[str, Any]]]) -> None:
    """Undo what a pickle set on allowed classes, and refuse the pickle if it did.

    The BUILD opcode applied to a class (not an instance) sets class attributes, for the
    whole process: `classes` holds each class's attributes as the pickle first found it.
    """
    modified = []
    for cls, (qualified, attributes) in classes.items():
        now = dict(vars(cls))
        if now.keys() == attributes.keys() and all(now[k] is v for k, v in attributes.items()):
            continue
        modified.append(qualified)
        for key in now.keys() - attributes.keys():
            delattr(cls, key)
        for key, value in attributes.items():
            if now.get(key) is not value:
                setattr(cls, key, value)
    if modified:
        raise pickle.UnpicklingError(
            f"the pickle modified the class {', '.join(modified)} (a BUILD on the class itself)"
        )


def _unmodifiable(value: Any) -> Any:
    """`value`, or a partial made for this lookup when it is a Python function or a partial.

    The BUILD opcode sets attributes on whatever it is given: on an allowed function it
    would rewrite it for the whole process (`__defaults__`, the cache of
    `torch.serialization._get_layout`), a partial it would point elsewhere; on a fresh
    partial it changes nothing else.
    """
    if isinstance(value, (types.FunctionType, functools.partial)):
        return functools.partial(value)
    return value


def check_nesting(file: IO[bytes]) -> None:
    """Refuse a pickle that nests values deeper than `MAX_NESTING`, before unpickling it.

    Scans the opcodes from the current position to STOP, then rewinds. A pickle of at
    most `MAX_NESTING` bytes cannot nest deeper and is not scanned. Malformed pickles are
    left to the unpickler to report.
    """
    start = file.tell()
    if file.seek(0, os.SEEK_END) - start <= MAX_NESTING:
        file.seek(start)
        return
    file.seek(start)
    try:
        depth = scan_pickle(file, MAX_NESTING).depth
    finally:
        file.seek(start)
    if depth > MAX_NESTING:
        raise pickle.UnpicklingError(f"values nested deeper than {MAX_NESTING} levels")


def _trusted_unpickler_class(pickle_module: Any) -> type[pickle.Unpickler]:
    base: type[pickle.Unpickler] = pickle_module.Unpickler

    class TrustedUnpickler(base):  # type: ignore[valid-type,misc]
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == LEGACY_STATE:
                return State
            return super().find_class(module, name)

    return TrustedUnpickler


def pickle_module_for(trust: Trust, pickle_module: Any = pickle, map_location: Any = None) -> Any:
    """A module-like object with `Unpickler` and `load`, to hand to `torch.load`.

    `map_location` applies to the storages of nested torch files too. Built once per
    policy and options (a load of many payloads would otherwise build a class for each).
    """
    try:
        return _cached_pickle_module(trust, pickle_module, map_location)
    except TypeError:  # an unhashable map_location (a dict, say)
        return _pickle_module(trust, pickle_module, map_location)


@functools.lru_cache(maxsize=64)
def _cached_pickle_module(trust: Trust, pickle_module: Any, map_location: Any) -> Any:
    return _pickle_module(trust, pickle_module, map_location)


def _pickle_module(trust: Trust, pickle_module: Any, map_location: Any) -> Any:
    unpickler = (
        _trusted_unpickler_class(pickle_module)
        if trust.trusted
        else _safe_unpickler_class(trust, map_location)
    )

    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return unpickler(file, **kwargs).load()

    return types.SimpleNamespace(Unpickler=unpickler, load=load, __name__="flambe_compat")


def unpickle(
    file: IO[bytes],
    trust: Trust,
    pickle_module: Any = pickle,
    map_location: Any = None,
    **kwargs: Any,
) -> Any:
    """Unpickle one raw pickle (flambe's pickle-only archives, 0.4.0-0.4.4 stashes)."""
    return pickle_module_for(trust, pickle_module, map_location).load(file, **kwargs)


def torch_load(
    file: str | os.PathLike[str] | IO[bytes] | bytearray,
    trust: Trust,
    pickle_module: Any = pickle,
    map_location: Any = None,
    mmap: bool = False,
    **kwargs: Any,
) -> Any:
    """`torch.load` of a legacy or zip torch file through the unpickler `trust` allows.

    `file` may be a whole file in memory (a `bytearray`, whose memory the tensors then
    share). Zip files of CPU tensors are read by `flambe_compat.torchzip` (the same
    values, without `torch.load`'s fixed cost per call); the rest, and any extra
    `torch.load` argument, go through `torch.load`.
    """
    import torch

    from .torchzip import Declined, load_zip

    module = pickle_module_for(trust, pickle_module, map_location)
    if not kwargs:
        try:
            return load_zip(file, module.Unpickler, map_location, mmap)
        except Declined:
            pass
    if isinstance(file, bytearray):
        file = io.BytesIO(file)
    _check_zip(file, trust)
    return torch.load(
        file,
        map_location=map_location,
        pickle_module=module,
        weights_only=False,
        mmap=mmap or None,
        **kwargs,
    )


def _check_zip(file: str | os.PathLike[str] | IO[bytes], trust: Trust) -> None:
    """Refuse what `torch.load` would do unsafely with a zip file, as torch's reader sees it.

    A TorchScript archive (a `constants.pkl` record) goes to `torch.jit.load`, which runs
    the code it holds: refused unless trusted. A record larger than the whole file can
    only be compressed, and torch inflates a record whole into memory: a zip bomb. The
    pickle record must pass its CRC, which torch's reader does not check.
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as opened:
            _check_zip(opened, trust)
        return
    import torch

    start = file.tell()
    is_zip = file.read(4) == ZIP_MAGIC
    size = file.seek(0, os.SEEK_END) - start
    file.seek(start)
    if not is_zip:
        return
    reader = torch._C.PyTorchFileReader(file)
    records = reader.get_all_records()
    file.seek(start)
    zip_pickle(file)  # its CRC: torch's reader checks none
    file.seek(start)
    allowed = trust.trusted or TORCHSCRIPT_LOADER in trust.allow_globals
    if "constants.pkl" in records and not allowed:
        raise UnsafeGlobalError(TORCHSCRIPT_LOADER, "would run the TorchScript code it holds")
    for name in records:
        refuse_inflating_record(name, reader.get_record_size(name), size)


def _load_nested_torch_file(trust: Trust, map_location: Any, data: bytes) -> Any:
    """`torch.storage._load_from_bytes`: a storage pickled as a whole torch file."""
    return torch_load(io.BytesIO(data), trust, map_location=map_location)


def allowed_globals() -> Mapping[str, Callable[..., Any] | Any]:
    """The names the default allow-list admits (for documentation and `inspect`)."""
    return dict(_default_globals())

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

import _compat_pickle
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

import torch

from .state import State

LEGACY_STATE = ("flambe.compile.serialization", "State")
"""Where flambe's pickles find `State`; unpickling maps it to `flambe_compat.State`."""

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
    """What unpickling may do: the allow-list, extra allowed globals, or full trust."""

    allow_globals: tuple[str, ...] = field(default=())
    trusted: bool = False
    map_location: Any = None

    @classmethod
    def of(
        cls,
        allow_globals: Iterable[str | Any] = (),
        trusted: bool = False,
        map_location: Any = None,
    ) -> Trust:
        """A `Trust` from user arguments: names as `module.name` strings or the objects."""
        names = tuple(g if isinstance(g, str) else _qualified_name(g) for g in allow_globals)
        return cls(allow_globals=names, trusted=trusted, map_location=map_location)


def _qualified_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _load_builtin_type(name: str) -> type:
    """dill's `_load_type`, for the harmless builtin types real archives pickle (a `set`)."""
    try:
        return _HARMLESS_TYPE_NAMES[name]
    except KeyError:
        raise UnsafeGlobalError(
            f"dill._dill._load_type({name!r})", "names a type outside the harmless builtins"
        ) from None


def _encode_latin1(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode`, as protocol 2 pickles use it for bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafeGlobalError("_codecs.encode", f"with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


@functools.cache
def _default_globals() -> dict[str, Any]:
    """The allow-list: names a pickle may use, mapped to what they resolve to."""
    allowed: dict[str, Any] = {
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "builtins.bytes": bytes,
        "builtins.bytearray": bytearray,
        "builtins.complex": complex,
        "builtins.slice": slice,
        "builtins.range": range,
        "_codecs.encode": _encode_latin1,
        "dill._dill._load_type": _load_builtin_type,
        "torch.Size": torch.Size,
        "torch.Tensor": torch.Tensor,
        "torch.device": torch.device,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch.serialization._get_layout": torch.serialization._get_layout,
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        ".".join(LEGACY_STATE): State,
        "flambe_compat.state.State": State,
    }
    allowed.update(_numpy_globals())
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


def _numpy_globals() -> dict[str, Any]:
    """numpy arrays, scalars and dtypes, if numpy is installed (else no pickle can hold them)."""
    try:
        import numpy
    except ImportError:
        return {}
    multiarray = importlib.import_module("numpy._core.multiarray")
    allowed: dict[str, Any] = {"numpy.ndarray": numpy.ndarray, "numpy.dtype": numpy.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[f"{module}._reconstruct"] = multiarray._reconstruct
        allowed[f"{module}.scalar"] = multiarray.scalar
    for dtype_class in vars(numpy.dtypes).values():
        if isinstance(dtype_class, type) and issubclass(dtype_class, numpy.dtype):
            allowed[f"numpy.dtypes.{dtype_class.__name__}"] = dtype_class
    return allowed


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


def _safe_unpickler_class(trust: Trust) -> type[pickle.Unpickler]:
    allowed = dict(_default_globals())
    allowed["torch.storage._load_from_bytes"] = functools.partial(_load_nested_torch_file, trust)
    for name in trust.allow_globals:
        allowed.setdefault(name, None)
    return allow_list_unpickler(allowed)


def python3_name(module: str, name: str) -> str:
    """`module.name` as Python 3 spells it (protocol 2 pickles may say `__builtin__.set`)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def allow_list_unpickler(
    allowed: dict[str, Any], on_unknown: Callable[[str], Any] | None = None
) -> type[pickle.Unpickler]:
    """An unpickler resolving globals through `allowed` only (a `None` value: import it).

    A global outside `allowed` raises `UnsafeGlobalError`, or resolves to
    `on_unknown(name)` when given (the peeking reader uses inert stand-ins).
    """

    class AllowListUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            qualified = python3_name(module, name)
            if qualified not in allowed:
                if on_unknown is None:
                    raise UnsafeGlobalError(qualified)
                return on_unknown(qualified)
            if allowed[qualified] is None:
                allowed[qualified] = _resolve(qualified)
            return allowed[qualified]

    return AllowListUnpickler


def _trusted_unpickler_class(pickle_module: Any) -> type[pickle.Unpickler]:
    base: type[pickle.Unpickler] = pickle_module.Unpickler

    class TrustedUnpickler(base):  # type: ignore[valid-type,misc]
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == LEGACY_STATE:
                return State
            return super().find_class(module, name)

    return TrustedUnpickler


def pickle_module_for(trust: Trust, pickle_module: Any = pickle) -> Any:
    """A module-like object with `Unpickler` and `load`, to hand to `torch.load`."""
    unpickler = (
        _trusted_unpickler_class(pickle_module) if trust.trusted else _safe_unpickler_class(trust)
    )

    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return unpickler(file, **kwargs).load()

    return types.SimpleNamespace(Unpickler=unpickler, load=load, __name__="flambe_compat")


def unpickle(file: IO[bytes], trust: Trust, pickle_module: Any = pickle, **kwargs: Any) -> Any:
    """Unpickle one raw pickle (flambe's pickle-only archives, 0.4.0-0.4.4 stashes)."""
    return pickle_module_for(trust, pickle_module).load(file, **kwargs)


def torch_load(
    file: str | os.PathLike[str] | IO[bytes],
    trust: Trust,
    pickle_module: Any = pickle,
    mmap: bool = False,
    **kwargs: Any,
) -> Any:
    """`torch.load` of a legacy or zip torch file through the unpickler `trust` allows."""
    return torch.load(
        file,
        map_location=trust.map_location,
        pickle_module=pickle_module_for(trust, pickle_module),
        weights_only=False,
        mmap=mmap or None,
        **kwargs,
    )


def _load_nested_torch_file(trust: Trust, data: bytes) -> Any:
    """`torch.storage._load_from_bytes`: a storage pickled as a whole torch file."""
    return torch_load(io.BytesIO(data), trust)


def allowed_globals() -> Mapping[str, Callable[..., Any] | Any]:
    """The names the default allow-list admits (for documentation and `inspect`)."""
    return dict(_default_globals())

"""Run code written for flambe unchanged: `import flambe` resolves to flambe_compat.

`install()` puts an import hook in front of `sys.meta_path`: `flambe`, `flambe.compile`
(`Component`, `registrable_factory`, `register`, `alias`, `save`, `load`, ...),
`flambe.compile.component`, `flambe.compile.registrable`,
`flambe.compile.serialization` become ours, and `flambe.<module>` (`flambe.nn`,
`flambe.nlp.classification`, `flambe.field`, `flambe.tokenizer`, ...) is
`flambe_compat.builtins.<module>`. A user's module then imports as it is and its
Component subclasses register their tags. `uninstall()` removes the hook and the
modules it created. Nothing installs it implicitly, and it refuses to shadow a real
flambe.

>>> install()
>>> from flambe.compile import Component
>>> Component is __import__("flambe_compat").Component
True
>>> uninstall()
>>> import flambe
Traceback (most recent call last):
...
ModuleNotFoundError: No module named 'flambe'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

__all__ = ["ShimError", "install", "installed", "uninstall"]

_ROOT = "flambe"
_BUILTINS = "flambe_compat.builtins"
_ALIASES = {
    "flambe.compile.serialization": "flambe_compat.serialization",
    "flambe.nn.embedder": f"{_BUILTINS}.nn.embedding",  # 0.4.3's module
}
_FLATTENED = ("flambe.nlp.transformers.",)
"""Packages of flambe ported as one module: their submodules all alias to it."""
_lock = threading.Lock()


class ShimError(RuntimeError):
    """The shim cannot be installed (the real flambe is importable)."""


def _compile_names() -> dict[str, Any]:
    import flambe_compat
    from flambe_compat import registry, serialization
    from flambe_compat.component import Component, registrable_factory

    return {
        "Component": Component,
        "registrable_factory": registrable_factory,
        "register": registry.register,
        "alias": registry.alias,
        "save": serialization.save,
        "load": serialization.load,
        "save_state_to_file": serialization.save_state_to_file,
        "load_state_from_file": serialization.load_state_from_file,
        "State": flambe_compat.State,
        "LoadError": flambe_compat.LoadError,
    }


def _synthetic(name: str) -> types.ModuleType | None:
    """The modules of flambe we write ourselves (packages re-exporting our names)."""
    names = _compile_names()
    if name == _ROOT:
        import flambe_compat

        module = types.ModuleType(name, "flambe, provided by flambe_compat.shim")
        for key in ("Component", "save", "load", "save_state_to_file", "load_state_from_file"):
            setattr(module, key, names[key])
        module.__dict__["__version__"] = f"0.4.18+flambe_compat.{flambe_compat.__version__}"
        module.__path__ = []
        return module
    if name in ("flambe.compile", "flambe.compile.component", "flambe.compile.registrable"):
        module = types.ModuleType(name, "flambe.compile, provided by flambe_compat.shim")
        for key, value in names.items():
            setattr(module, key, value)
        if name == "flambe.compile":
            module.__path__ = []
        return module
    return None


class _Loader(importlib.abc.Loader):
    def __init__(self, target: str | None) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        if self.target is None:
            return _synthetic(spec.name)
        return importlib.import_module(self.target)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the module is ours, already executed."""


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _ROOT and not fullname.startswith(_ROOT + "."):
            return None
        if _synthetic_name(fullname):
            return importlib.machinery.ModuleSpec(fullname, _Loader(None), is_package=True)
        aliased = _ALIASES.get(fullname) or f"{_BUILTINS}.{fullname[len(_ROOT) + 1 :]}"
        for flattened in _FLATTENED:
            if fullname.startswith(flattened):
                aliased = f"{_BUILTINS}.{flattened[len(_ROOT) + 1 : -1]}"
        try:
            found = importlib.util.find_spec(aliased)
        except ModuleNotFoundError:
            found = None
        if found is None:
            return None
        package = found.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, _Loader(aliased), is_package=package)


def _synthetic_name(name: str) -> bool:
    return name in (
        _ROOT,
        "flambe.compile",
        "flambe.compile.component",
        "flambe.compile.registrable",
    )


_finder: _Finder | None = None


def installed() -> bool:
    """Whether the shim is installed."""
    return _finder is not None


def install() -> None:
    """Make `import flambe...` resolve to flambe_compat (idempotent).

    `ShimError` when the real flambe is importable: the shim never shadows it.
    """
    global _finder
    with _lock:
        if _finder is not None:
            return
        present = sys.modules.get(_ROOT)
        if present is not None or importlib.util.find_spec(_ROOT) is not None:
            where = getattr(present, "__file__", None) or importlib.util.find_spec(_ROOT)
            raise ShimError(
                f"the real flambe is importable ({where}); flambe_compat.shim refuses to shadow "
                "it: uninstall flambe or run without the shim"
            )
        _finder = _Finder()
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Remove the import hook and every `flambe` module it provided."""
    global _finder
    with _lock:
        if _finder is None:
            return
        sys.meta_path.remove(_finder)
        _finder = None
        for name in [n for n in sys.modules if n == _ROOT or n.startswith(_ROOT + ".")]:
            del sys.modules[name]

"""Optional third-party packages some flambe built-ins need, imported only when used.

A missing package is a `LoadError` that names the class, the package and the fix, so a
checkpoint that holds such a class fails with a message instead of an `ImportError`.

>>> require("math", "Example").pi > 3
True
>>> require("surely_not_installed_pkg", "Example")
Traceback (most recent call last):
...
flambe_compat.errors.LoadError: Example needs the optional package 'surely_not_installed_pkg' ...
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import LoadError

_PIP_NAMES = {"sru": "sru", "nltk": "nltk", "fastBPE": "fastBPE", "transformers": "transformers"}


def require(module: str, user: str) -> ModuleType:
    """Import `module` for the built-in `user`, or raise a `LoadError` naming both."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = _PIP_NAMES.get(module, module)
        raise LoadError(
            f"{user} needs the optional package {module!r}, which is not installed; "
            f"install it (pip install {package}) to load this object"
        ) from None


def not_ported(user: str, dependency: str, why: str) -> LoadError:
    """The error for a flambe class that flambe_compat deliberately does not rebuild."""
    return LoadError(
        f"{user} is not ported to flambe_compat: it needs the optional dependency "
        f"{dependency!r} ({why}); rebuild this part of the model with {dependency} directly"
    )

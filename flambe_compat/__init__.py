"""flambe_compat: flambe checkpoints, loadable, checkable and upgradable on current PyTorch.

>>> import flambe_compat
>>> state = flambe_compat.load_state_from_file("fixtures/flambe-corpus/0.4.18-zip/mlp-dir")
>>> state["net.0.weight"].shape
torch.Size([8, 4])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .class_migrations import ClassMigrations, register_class_migration
from .errors import LoadError
from .pipeline import validate
from .report import Report
from .state import State
from .upgrade import UpgradeResult, upgrade

if TYPE_CHECKING:
    from .component import Component, registrable_factory
    from .export import ExportError, ExportResult, export
    from .registry import Registry, register
    from .serialization import SaveTreeNode, load, load_state_from_file, save, save_state_to_file

__version__ = "0.1.0"

_LAZY = {
    "Component": "component",
    "registrable_factory": "component",
    "Registry": "registry",
    "ExportError": "export",
    "ExportResult": "export",
    "export": "export",
    "register": "registry",
    "load": "serialization",
    "SaveTreeNode": "serialization",
    "load_state_from_file": "serialization",
    "save": "serialization",
    "save_state_to_file": "serialization",
}
"""Names imported on first use: `serialization` imports dill (flambe's default pickle
module) and its saves torch, the object layer imports torch, and `flambe-compat validate`
needs neither."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ClassMigrations",
    "Component",
    "ExportError",
    "ExportResult",
    "LoadError",
    "Registry",
    "Report",
    "SaveTreeNode",
    "State",
    "__version__",
    "UpgradeResult",
    "load",
    "export",
    "load_state_from_file",
    "register",
    "register_class_migration",
    "registrable_factory",
    "save",
    "save_state_to_file",
    "upgrade",
    "validate",
]

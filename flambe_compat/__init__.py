"""flambe_compat: flambe checkpoints, loadable, checkable and upgradable on current PyTorch.

>>> import flambe_compat
>>> state = flambe_compat.load_state_from_file("fixtures/flambe-corpus/0.4.18-zip/mlp-dir")
>>> state["net.0.weight"].shape
torch.Size([8, 4])
"""

from __future__ import annotations

from .class_migrations import ClassMigrations, register_class_migration
from .errors import LoadError
from .export import ExportError, ExportResult, export
from .serialization import SaveTreeNode, load_state_from_file, save, save_state_to_file
from .state import State
from .upgrade import UpgradeResult, upgrade
from .validate import Report, validate

__version__ = "0.1.0"

__all__ = [
    "ClassMigrations",
    "ExportError",
    "ExportResult",
    "LoadError",
    "Report",
    "SaveTreeNode",
    "State",
    "__version__",
    "UpgradeResult",
    "export",
    "load_state_from_file",
    "register_class_migration",
    "save",
    "save_state_to_file",
    "upgrade",
    "validate",
]

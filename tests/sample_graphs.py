"""Legacy user code for the object tests: modules written for flambe, imported through the shim.

`tests/legacy/` holds them as top-level modules (their tags are `!<module>.<Class>`, as
flambe wrote them): `sample_models` (the corpus graphs) and `legacy_models` (ours).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from flambe_compat import shim

LEGACY = Path(__file__).resolve().parent / "legacy"


def legacy_module(name: str) -> ModuleType:
    """Import `tests/legacy/<name>.py` with the shim installed for the import only."""
    if name in sys.modules:
        return sys.modules[name]
    if str(LEGACY) not in sys.path:
        sys.path.insert(0, str(LEGACY))
    was_installed = shim.installed()
    shim.install()
    try:
        return importlib.import_module(name)
    finally:
        if not was_installed:
            shim.uninstall()

"""Rebuild objects with real flambe 0.4.18's `load()` and run them (run by the oracle's python).

    oracle_objects.py PATH...

Prints one JSON document: per path, the class, `describe()` of `get_state()`, and the
output of `forward(example_input())` when its class defines a forward (the graphs of
`tests/legacy/legacy_models.py` and `sample_models`), or `{"error": ...}`. torch's classes
are registered as flambe's `setup_default_modules` did, without its ray-only part.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from tests.corpus import describe

LEGACY = Path(__file__).resolve().parent / "legacy"


def main() -> None:
    readings: dict[str, Any] = {}
    sys.path.insert(0, str(LEGACY))
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON document
        import flambe.compile.serialization as serialization
        import torch
        from flambe.compile.utils import make_component

        def setup_default_modules() -> None:
            exclude = ["torch.nn.quantized", "torch.nn.qat"]
            make_component(torch.nn.Module, only_module="torch.nn", exclude=exclude)
            make_component(torch.optim.Optimizer, only_module="torch.optim")

        serialization.setup_default_modules = setup_default_modules
        import legacy_models
        import sample_models  # noqa: F401  (registers the tags of the corpus graphs)

        for path in sys.argv[1:]:
            try:
                obj = serialization.load(path)
                reading = {"class": type(obj).__name__, "state": describe(obj.get_state())}
                if "forward" in vars(type(obj)):  # its own, not nn.Module's
                    with torch.no_grad():
                        reading["output"] = obj.forward(legacy_models.example_input()).tolist()
                readings[path] = reading
            except Exception as error:
                readings[path] = {"error": f"{type(error).__name__}: {error}"[:800]}
    json.dump(readings, sys.stdout)


if __name__ == "__main__":
    main()

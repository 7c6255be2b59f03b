"""Best-of-N wall-clock timing; torch and the standard library only, so that the oracle's
interpreter (flambe 0.4.18) times flambe exactly as the benchmarks time flambe_compat.

The steps of one benchmark run in turn within each round, so that a change of load on
the machine during the run weighs on all of them alike.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

Step = tuple[Callable[[], object], Callable[[], object]]
"""A timed action, and an untimed one run before it (removing the previous output)."""


def best_times(repeats: int, steps: Mapping[str, Step]) -> dict[str, float]:
    """The shortest time of each step over `repeats` rounds, running the steps in order."""
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, (action, before) in steps.items():
            before()
            start = time.perf_counter()
            result = action()
            best[name] = min(best[name], time.perf_counter() - start)
            del result  # free a loaded state before the next step
    return best


def save_load_steps(
    save: Callable[[], object],
    load: Callable[[], object],
    archive: Path,
    tensors: dict[str, Any],
    flat: Path,
) -> dict[str, Step]:
    """`save` (writing `archive`) and `load`, then their yardsticks `torch_save` and
    `torch_load`: `torch.save`/`torch.load` of the same `tensors` in the one file `flat`."""
    return {
        "save": (save, lambda: remove(archive)),
        "load": (load, nothing),
        "torch_save": (lambda: torch.save(tensors, flat), lambda: remove(flat)),
        "torch_load": (lambda: torch.load(flat), nothing),
    }


def nothing() -> None:
    """The `before` of steps that need no preparation."""


def remove(path: Path) -> None:
    """Remove the file or folder at `path`, if any."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)

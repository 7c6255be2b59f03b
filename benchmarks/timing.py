"""Best-of-N wall-clock timing; torch and the standard library only, so that the oracle's
interpreter (flambe 0.4.18) times flambe exactly as the benchmarks time flambe_compat.

The steps of one benchmark run in turn within each round, so that a change of load on
the machine during the run weighs on all of them alike. A load is timed until every page
of every tensor has been read once (`touch`): a memory-mapped load pays for its reads
like an eager one.
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
PAGE = 4096


def best_times(repeats: int, steps: Mapping[str, Step]) -> dict[str, float]:
    """The shortest time of each step over `repeats` rounds, running the steps in order:
    wall-clock seconds under the step's name, and the process's CPU seconds (user and
    system, all threads) under `cpu_` and its name. On a machine shared with busy
    processes the wall clock mostly measures the share of the CPUs a step got."""
    best = dict.fromkeys([*steps, *(f"cpu_{name}" for name in steps)], float("inf"))
    for _ in range(repeats):
        for name, (action, before) in steps.items():
            before()
            start, cpu = time.perf_counter(), time.process_time()
            result = action()
            best[name] = min(best[name], time.perf_counter() - start)
            best[f"cpu_{name}"] = min(best[f"cpu_{name}"], time.process_time() - cpu)
            del result  # free a loaded state before the next step
    return best


def touch(loaded: Any) -> Any:
    """Read one byte of every 4 KiB page of every tensor in the mapping `loaded`;
    returns `loaded`."""
    for value in loaded.values():
        if isinstance(value, torch.Tensor) and value.numel():
            flat = value.detach().reshape(-1).view(torch.uint8)
            flat[::PAGE].sum()
            flat[-1].item()  # the last page, which a stride from the start may miss
    return loaded


def save_load_steps(
    save: Callable[[], object],
    load: Callable[[], object],
    archive: Path,
    tensors: dict[str, Any],
    flat: Path,
) -> dict[str, Step]:
    """`save` (writing `archive`) and `load` (its pages then touched), then their
    yardsticks `torch_save` and `torch_load`: `torch.save`/`torch.load` of the same
    `tensors` in the one file `flat`."""
    return {
        "save": (save, lambda: remove(archive)),
        "load": (lambda: touch(load()), nothing),
        "torch_save": (lambda: torch.save(tensors, flat), lambda: remove(flat)),
        "torch_load": (lambda: touch(torch.load(flat)), nothing),
    }


def nothing() -> None:
    """The `before` of steps that need no preparation."""


def remove(path: Path) -> None:
    """Remove the file or folder at `path`, if any."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)

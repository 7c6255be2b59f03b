"""Peak memory of one load, in a fresh process: `python -m benchmarks.peak_rss LOADER PATH`.

LOADER is `flambe_compat` (`load_state_from_file`) or `torch` (`torch.load`). Prints
`{"before": KiB, "after": KiB}`: the process's peak resident set after the imports and
after the load. The peak is Linux's `VmHWM`, not `ru_maxrss`: a child started by
`subprocess` inherits its parent's `ru_maxrss` across exec (the parent's memory image
is the one exec replaces), so `ru_maxrss` would report the benchmark process's peak.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from flambe_compat import load_state_from_file

LOADERS: dict[str, Callable[[str], Any]] = {
    "flambe_compat": load_state_from_file,
    "torch": torch.load,
}


def peak_rss_kib() -> int:
    """This process's peak resident set size (`VmHWM`), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main() -> None:
    loader, path = sys.argv[1:]
    before = peak_rss_kib()
    loaded = LOADERS[loader](path)
    after = peak_rss_kib()
    print(json.dumps({"before": before, "after": after, "entries": len(loaded)}))


if __name__ == "__main__":
    main()

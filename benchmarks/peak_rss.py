"""Peak memory of one save or load, in a fresh process.

    python -m benchmarks.peak_rss load WHO PATH
    python -m benchmarks.peak_rss save WHO PATH --size-mb MB --nodes N [--protocol P] [--compress]

WHO is `flambe_compat` (`load_state_from_file`, `save_state_to_file`) or `torch`
(`torch.load`, `torch.save` of the state's tensors as one flat dict). A load is followed
by reading every page of every tensor (`timing.touch`), so memory-mapped pages count; a
save first builds the benchmark's state (`common.flambe_state`). Prints `{"before": KiB,
"after": KiB}`: the process's peak resident set before and after the measured step. The
peak is Linux's `VmHWM`, not `ru_maxrss`: a child started by `subprocess` inherits its
parent's `ru_maxrss` across exec (the parent's memory image is the one exec replaces),
so `ru_maxrss` would report the benchmark process's peak.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import flambe_state
from benchmarks.timing import touch
from flambe_compat import load_state_from_file, save_state_to_file


def peak_rss_kib() -> int:
    """This process's peak resident set size (`VmHWM`), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=("save", "load"))
    parser.add_argument("who", choices=("flambe_compat", "torch"))
    parser.add_argument("path", type=Path)
    parser.add_argument("--size-mb", type=float)
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--protocol", type=int)
    parser.add_argument("--compress", action="store_true")
    args = parser.parse_args()
    if args.step == "load":
        load = load_state_from_file if args.who == "flambe_compat" else torch.load
        before = peak_rss_kib()
        touch(load(args.path))
        after = peak_rss_kib()
    else:
        state = flambe_state(args.size_mb, args.nodes)
        protocol = {} if args.protocol is None else {"protocol": args.protocol}
        before = peak_rss_kib()
        if args.who == "torch":
            torch.save(dict(state), args.path)
        else:
            base = str(args.path).removesuffix(".tar.gz")
            save_state_to_file(state, base, compress=args.compress, overwrite=True, **protocol)
        after = peak_rss_kib()
    print(json.dumps({"before": before, "after": after}))


if __name__ == "__main__":
    main()

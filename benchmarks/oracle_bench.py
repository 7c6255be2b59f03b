"""flambe 0.4.18's save and load, timed in the oracle's process (see benchmarks/common.py).

    oracle_bench.py FLAT_TENSORS METADATA_JSON WORK_DIR [--compress] [--repeats N]

Builds flambe's `State` from the tensors of a flat `torch.save` file and the metadata
(`_flambe_directories` as a list), then prints the best times in seconds of flambe's
`save_state_to_file` and `load_state_from_file`, and of `torch.save`/`torch.load` of the
same tensors in one flat file, as a JSON document. flambe is imported in `main()` only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import OrderedDict
from pathlib import Path

import torch

from benchmarks.timing import best_times, remove, save_load_steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tensors", type=Path)
    parser.add_argument("metadata", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON document
        import flambe.compile.serialization as serialization

        serialization.setup_default_modules = lambda: None  # needs ray
        tensors = torch.load(args.tensors)
        state = serialization.State(tensors)
        state._metadata = OrderedDict(json.loads(args.metadata.read_text()))
        state._metadata["_flambe_directories"] = set(state._metadata["_flambe_directories"])
        base, flat = args.work / "flambe", args.work / "flambe-flat.pt"
        archive = base.with_name(base.name + ".tar.gz") if args.compress else base
        times = best_times(
            args.repeats,
            save_load_steps(
                lambda: serialization.save_state_to_file(state, str(base), compress=args.compress),
                lambda: serialization.load_state_from_file(str(archive)),
                archive,
                tensors,
                flat,
            ),
        )
        remove(archive)
        remove(flat)
    json.dump(times, sys.stdout)


if __name__ == "__main__":
    main()

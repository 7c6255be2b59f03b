"""Validate: `flambe-compat validate` of a small protocol 2 archive, as a new process.

Bar (issue 7, DESIGN.md section 8): at most 0.2x the time of `python -c "import torch"`
on the same machine (validation imports no torch).

    python -m benchmarks.bench_validate [--size-mb 1] [--nodes 4] [--repeats 5]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import arguments, flambe_state, header, ratio_line, tensor_bytes
from benchmarks.timing import best_times, nothing
from flambe_compat import save_state_to_file


def run(*command: str) -> None:
    subprocess.run([sys.executable, *command], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    args = arguments(__doc__ or "", size_mb=1, nodes=4)
    state = flambe_state(args.size_mb, args.nodes)
    protocol = {} if args.protocol is None else {"protocol": args.protocol}
    with tempfile.TemporaryDirectory(prefix="bench_validate-") as scratch:
        archive = Path(scratch) / "small"
        save_state_to_file(state, archive, **protocol)
        times = best_times(
            args.repeats,
            {
                "validate": (lambda: run("-m", "flambe_compat", "validate", str(archive)), nothing),
                "import_torch": (lambda: run("-c", "import torch"), nothing),
            },
        )
    written = "default protocol" if args.protocol is None else f"protocol {args.protocol}"
    print(header("bench_validate", args, tensor_bytes(state), f"folder, {written}"))
    base, yardstick = times["import_torch"], 'python -c "import torch"'
    print(ratio_line("validate ratio", times["validate"], base, "validate", yardstick))


if __name__ == "__main__":
    main()

"""Upgrade: a protocol 1 folder of 400 MiB of float32 over 10 Components, to protocol 2.

Bar (issue 7, DESIGN.md section 8): `upgrade` at most 1.5x the time of one load plus
one save (`load_state_from_file` then `save_state_to_file` in protocol 2).

    python -m benchmarks.bench_upgrade [--size-mb 400] [--nodes 10] [--protocol 1] [--repeats 3]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import arguments, flambe_state, header, step_line, tensor_bytes
from benchmarks.timing import best_times, nothing, remove
from flambe_compat import load_state_from_file, save_state_to_file, upgrade


def main() -> None:
    args = arguments(__doc__ or "", size_mb=400, nodes=10, protocol=1)
    state = flambe_state(args.size_mb, args.nodes)
    with tempfile.TemporaryDirectory(prefix="bench_upgrade-") as scratch:
        work = Path(scratch)
        source, upgraded, saved = work / "source", work / "upgraded", work / "saved"
        save_state_to_file(state, source, protocol=args.protocol)
        del state
        times = best_times(
            args.repeats,
            {
                "upgrade": (lambda: upgrade(source, upgraded), lambda: remove(upgraded)),
                "load_save": (
                    lambda: save_state_to_file(load_state_from_file(source), saved),
                    lambda: remove(saved),
                ),
                "load": (lambda: load_state_from_file(source), nothing),
            },
        )
    size = tensor_bytes(flambe_state(args.size_mb, args.nodes))
    print(header("bench_upgrade", args, size, f"folder, protocol {args.protocol} to 2"))
    print(step_line("upgrade ratio", times, "upgrade", "load_save", "upgrade", "load + save"))
    print(f"  (of which the load alone: {times['load']:.3f} s)")


if __name__ == "__main__":
    main()

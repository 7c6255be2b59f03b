"""Export to safetensors: a 400 MiB archive (float32 over 10 Components, a folder) exported
with `flambe_compat.export(..., to="safetensors")`, against `safetensors.torch.save_file`
of the same tensors in memory.

The export loads the archive through the safe loader, writes `model.safetensors`, reads it
back and compares every tensor before it publishes the folder; `save_file` only writes.
The ratio is export time over `save_file` time (best of N each); the load alone is timed
too, to show where the time goes.

    python -m benchmarks.bench_export [--size-mb 400] [--nodes 10] [--repeats 3]
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from benchmarks.common import MIB, arguments, flambe_state, tensor_bytes
from benchmarks.timing import best_times, nothing, remove
from flambe_compat import export, load_state_from_file, save_state_to_file


def main() -> None:
    args = arguments(__doc__ or "", size_mb=400, nodes=10)
    state = flambe_state(args.size_mb, args.nodes)
    size = tensor_bytes(state)
    with tempfile.TemporaryDirectory(prefix="bench_export-") as scratch:
        work = Path(scratch)
        archive, out, flat = work / "archive", work / "exported", work / "flat.safetensors"
        protocol = {} if args.protocol is None else {"protocol": args.protocol}
        save_state_to_file(state, archive, **protocol)
        tensors = dict(state)
        times = best_times(
            args.repeats,
            {
                "export": (lambda: export(archive, out, to="safetensors"), lambda: remove(out)),
                "save_file": (lambda: save_file(tensors, flat), lambda: remove(flat)),
                "load": (lambda: load_state_from_file(archive), nothing),
            },
        )
    print(
        f"bench_export: {size / MIB:.1f} MiB of float32 over {args.nodes} nodes (folder, "
        f"{'default protocol' if args.protocol is None else f'protocol {args.protocol}'}), "
        f"best of {args.repeats}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    ratio = times["export"] / times["save_file"]
    print(
        f"export ratio: {ratio:.2f} (flambe_compat export {times['export']:.3f} s, "
        f"safetensors.torch.save_file {times['save_file']:.3f} s)"
    )
    print(
        f"of which load_state_from_file: {times['load']:.3f} s; export without the load / "
        f"save_file: {(times['export'] - times['load']) / times['save_file']:.2f}"
    )


if __name__ == "__main__":
    main()

"""Many nodes: 40 MiB of float32 over 400 Components, saved as a folder and loaded.

Bar (DESIGN.md section 8): save under 2x one flat torch.save (flambe 0.4.18: 7.6x),
load under 1.3x torch.load.

    python -m benchmarks.bench_many_nodes [--size-mb 40] [--nodes 400] [--repeats 3]
"""

from __future__ import annotations

from benchmarks.common import arguments, run_benchmark

if __name__ == "__main__":
    run_benchmark("bench_many_nodes", arguments(__doc__, size_mb=40, nodes=400))

"""Large tensors: 400 MiB of float32 over 10 Components, saved as a folder and loaded.

Bar (DESIGN.md section 8): save and load within 1.1x of one flat torch.save/torch.load,
no slower than flambe 0.4.18, peak memory while loading at most 1.1x the tensor bytes.

    python -m benchmarks.bench_large [--size-mb 400] [--nodes 10] [--repeats 3]
"""

from __future__ import annotations

from benchmarks.common import arguments, run_benchmark

if __name__ == "__main__":
    run_benchmark("bench_large", arguments(__doc__, size_mb=400, nodes=10))

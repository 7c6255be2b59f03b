"""Compressed archives: 400 MiB of float32 over 10 Components, saved as a tar.gz and loaded.

Bar (DESIGN.md section 8): standard gzip, not slower than flambe 0.4.18 (gzip level 9).
The yardstick is still an uncompressed flat torch.save/torch.load.

    python -m benchmarks.bench_compress [--size-mb 400] [--nodes 10] [--repeats 3]
"""

from __future__ import annotations

from benchmarks.common import arguments, run_benchmark

if __name__ == "__main__":
    run_benchmark("bench_compress", arguments(__doc__, size_mb=400, nodes=10), compress=True)

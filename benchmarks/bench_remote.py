"""Remote loads: an archive on a local S3 server (moto, loopback), loaded by URL.

Bar (issue 9): `load_state_from_file("s3://...")` of a 400 MiB archive relative to a
plain s3fs download of the same bytes (`S3FileSystem.get`, recursive), which is what any
remote load has to do at least. Also printed: the local load of the same archive, and
the remote load over download + local load (the cost of the checks of `flambe_compat.store`).

    python -m benchmarks.bench_remote [--size-mb 400] [--nodes 10] [--repeats 3] [--compress]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import MIB, flambe_state, tensor_bytes
from flambe_compat import load_state_from_file, save_state_to_file
from flambe_compat.write import archive_path
from tests.s3server import S3Server


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=float, default=400, help="MiB of float32 tensors")
    parser.add_argument("--nodes", type=int, default=10, help="Components, the root included")
    parser.add_argument("--repeats", type=int, default=3, help="timings are best of N")
    parser.add_argument("--protocol", type=int, choices=(1, 2), default=2)
    parser.add_argument("--compress", action="store_true", help="a .tar.gz instead of a folder")
    parser.add_argument("--no-flambe", action="store_true", help="accepted for symmetry; unused")
    return parser.parse_args()


def _best(repeats: int, steps: list[Callable[[], object]]) -> list[float]:
    """The best time of each step over `repeats` rounds, each round running every step in
    turn (so that a busy spell of the machine does not fall on one step only)."""
    best = [float("inf")] * len(steps)
    for _ in range(repeats):
        for index, step in enumerate(steps):
            start = time.perf_counter()
            step()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def main() -> None:
    args = _arguments()
    server = S3Server.start()
    os.environ.update({**server.environment(), "AWS_MAX_ATTEMPTS": "5"})
    try:
        import s3fs

        bucket = server.bucket("bench")
        state = flambe_state(args.size_mb, args.nodes)
        fs = s3fs.S3FileSystem()
        with tempfile.TemporaryDirectory(prefix="bench_remote-") as scratch:
            work = Path(scratch)
            save_state_to_file(state, work / "m", compress=args.compress, protocol=args.protocol)
            local = archive_path(work / "m", args.compress, False)
            remote = f"{bucket}/{local.name}"
            fs.put(str(local), remote, recursive=local.is_dir(), batch_size=4)
            stored = sum(fs.du(remote, total=False).values())

            def download() -> None:
                target = work / "download"
                fs.invalidate_cache()
                fs.get(remote, str(target), recursive=local.is_dir())
                shutil.rmtree(target) if target.is_dir() else target.unlink()

            plain, remote_load, local_load = _best(
                args.repeats,
                [
                    download,
                    lambda: load_state_from_file(f"s3://{remote}"),
                    lambda: load_state_from_file(local),
                ],
            )
    finally:
        server.stop()
    kind = f"{'tar.gz' if args.compress else 'folder'}, protocol {args.protocol}"
    load = os.getloadavg()[0]
    print(
        f"bench_remote: {tensor_bytes(state) / MIB:.0f} MiB of tensors over {args.nodes} nodes, "
        f"{stored / MIB:.0f} MiB stored ({kind}); best of {args.repeats}; load average {load:.1f}"
    )
    print(
        f"remote load / s3fs download: {remote_load / plain:.2f} "
        f"(remote load {remote_load:.2f} s, s3fs download {plain:.2f} s)"
    )
    print(
        f"remote load / (s3fs download + local load): {remote_load / (plain + local_load):.2f} "
        f"(local load {local_load:.2f} s)"
    )


if __name__ == "__main__":
    main()

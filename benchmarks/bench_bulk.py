"""Batch throughput: `flambe-compat validate|upgrade --batch` over a store of archives, on
the local process pool and on a Dask LocalCluster, against the single-archive command run
in a shell loop (one `flambe-compat` process per archive, as a script would do it).

The store holds every archive of `fixtures/flambe-corpus` (78: six flambe releases, every
save mode) copied `--copies` times (default 3: 234 archives). Each batch runs once from
the command line in a fresh process, so its time includes starting the pool or the
cluster; the shell loop is timed on `--loop` archives spread over the store (every
archive costs it the same interpreter start) and its rate extrapolated to all. Rates are
archives/s and MB/s of archive bytes; the ratios are batch rate over shell-loop rate, the
batch timed whole; its steady rate (between its first result and its last) is printed too.

    python -m benchmarks.bench_bulk [--copies 3] [--loop 24] [--workers N] [--max-archives N]
                                    [--executors local,dask] [--operations validate,upgrade]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flambe_compat.bulk import find_archives_below
from tests.oracle import REPO

CORPUS = REPO / "fixtures" / "flambe-corpus"
COMMAND = [sys.executable, "-m", "flambe_compat"]
_LOOP = (
    'i=0; for archive in "$@"; do i=$((i + 1)); '
    '"$0" -m flambe_compat {operation} "$archive" {rest} || true; done'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--max-archives", type=int, help="take only the first N corpus archives")
    parser.add_argument("--loop", type=int, default=24, help="archives timed in the shell loop")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--executors", default="local,dask")
    parser.add_argument("--operations", default="validate,upgrade")
    args = parser.parse_args()
    executors = args.executors.split(",")
    with tempfile.TemporaryDirectory(prefix="bench_bulk-") as scratch:
        work = Path(scratch)
        store = work / "store"
        count, size = make_store(store, args.copies, args.max_archives)
        print(
            f"bench_bulk: {count} archives, {size / 1e6:.2f} MB, {args.workers} workers, load "
            f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        for operation in args.operations.split(","):
            loop = shell_loop(operation, store, args.loop, work)
            print(
                f"{operation} shell loop: {loop:.2f} archives/s, "
                f"{loop * size / count / 1e6:.3f} MB/s (timed on {args.loop} archives)"
            )
            for executor in executors:
                seconds, steady = batch(operation, store, executor, args.workers, work)
                rate = count / seconds
                print(
                    f"{operation} {executor} / shell loop: {rate / loop:.2f} "
                    f"({rate:.2f} archives/s, {size / seconds / 1e6:.3f} MB/s, {seconds:.1f} s "
                    f"with the pool or cluster start; once started {steady:.2f} archives/s, "
                    f"{steady * size / count / 1e6:.3f} MB/s)"
                )


def make_store(root: Path, copies: int, limit: int | None) -> tuple[int, int]:
    corpus = find_archives_below(str(CORPUS))[:limit]
    for copy in range(copies):
        for archive in corpus:
            target = root / f"copy{copy}" / archive.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = Path(archive.url)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copyfile(source, target)
    return len(corpus) * copies, sum(a.size for a in corpus) * copies


def shell_loop(operation: str, store: Path, count: int, work: Path) -> float:
    """Archives per second of one `flambe-compat` process per archive."""
    archives = [found.url for found in find_archives_below(str(store))]
    sample = archives[:: max(1, len(archives) // count)][:count]
    out = work / f"loop-{operation}"
    out.mkdir()
    rest = f'"{out}/$i-$(basename "$archive")"' if operation == "upgrade" else ""
    script = _LOOP.format(operation=operation, rest=rest)
    started = time.perf_counter()
    subprocess.run(
        ["bash", "-c", script, sys.executable, *sample],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return len(sample) / (time.perf_counter() - started)


def batch(
    operation: str, store: Path, executor: str, workers: int, work: Path
) -> tuple[float, float]:
    """Seconds of one batch command over the whole store, and its steady rate (archives/s
    between the first result and the last, without the pool or cluster start)."""
    out = [str(work / f"batch-{operation}-{executor}")] if operation == "upgrade" else []
    argv = [*COMMAND, operation, str(store), *out, "--executor", executor, "--jsonl"]
    started = time.perf_counter()
    arrivals: list[float] = []
    with subprocess.Popen(
        [*argv, "--workers", str(workers)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        for _ in process.stdout:
            arrivals.append(time.perf_counter())
        errors = process.stderr.read() if process.stderr else ""
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{errors[-2000:]}")
    results = arrivals[:-1]  # the last line is the summary
    steady = (len(results) - 1) / (results[-1] - results[0]) if len(results) > 1 else 0.0
    return seconds, steady


if __name__ == "__main__":
    main()

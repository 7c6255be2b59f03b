"""The benchmarks still run: each script, on a tiny state, exits 0 and prints its ratios.

The measurements themselves are never part of the test run (see benchmarks/README.md).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.oracle import REPO, find_oracle

SCRIPTS = sorted(p.stem for p in (REPO / "benchmarks").glob("bench_*.py"))
TINY = ("--size-mb", "2", "--nodes", "4", "--repeats", "1", "--protocol", "1")
RATIOS = (
    "save ratio",
    "load ratio",
    "floor save ratio",
    "floor load ratio",
    "peak RSS while saving",
    "peak RSS while loading",
)
SAVE_LOAD = ("bench_compress", "bench_large", "bench_many_nodes")
OTHER_RATIOS = {
    "bench_remote": ("remote load / s3fs download", "remote load / (s3fs download + local load)"),
    "bench_export": ("export ratio",),
    "bench_upgrade": ("upgrade ratio",),
    "bench_validate": ("validate ratio",),
}


def run_small(script: str, *flags: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", *TINY, *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_ratios(out: str, labels: tuple[str, ...]) -> None:
    for label in labels:
        assert re.search(rf"^{re.escape(label)}: \d+\.\d\d ", out, re.MULTILINE), out


def test_every_benchmark_is_checked() -> None:
    assert sorted([*SAVE_LOAD, *OTHER_RATIOS, "bench_bulk"]) == SCRIPTS


@pytest.mark.parametrize("script", SAVE_LOAD)
def test_benchmark_runs_small(script: str) -> None:
    assert_ratios(run_small(script, "--no-flambe"), RATIOS)


@pytest.mark.parametrize("script", sorted(OTHER_RATIOS))
def test_other_benchmark_runs_small(script: str) -> None:
    assert_ratios(run_small(script), OTHER_RATIOS[script])


def test_bulk_benchmark_runs_small() -> None:
    flags = ("--max-archives", "3", "--copies", "1", "--loop", "1", "--executors", "local")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_bulk", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for label in ("validate local / shell loop", "upgrade local / shell loop"):
        assert re.search(rf"^{label}: \d+\.\d\d ", done.stdout, re.MULTILINE), done.stdout


@pytest.mark.oracle
@pytest.mark.skipif(find_oracle() is None, reason="the flambe oracle is not installed")
def test_benchmark_times_flambe() -> None:
    out = run_small("bench_compress")
    assert_ratios(out, (*RATIOS, "flambe 0.4.18 save ratio", "flambe 0.4.18 load ratio"))

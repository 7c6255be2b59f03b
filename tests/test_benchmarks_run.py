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
SAVE_LOAD_SCRIPTS = [script for script in SCRIPTS if script != "bench_export"]
TINY = ("--size-mb", "2", "--nodes", "4", "--repeats", "1", "--protocol", "1")
RATIOS = ("save ratio", "load ratio", "peak RSS while loading / tensor bytes")
REMOTE_RATIOS = ("remote load / s3fs download", "remote load / (s3fs download + local load)")


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
    assert SCRIPTS == [
        "bench_compress",
        "bench_export",
        "bench_large",
        "bench_many_nodes",
        "bench_remote",
    ]


@pytest.mark.parametrize("script", SAVE_LOAD_SCRIPTS)
def test_benchmark_runs_small(script: str) -> None:
    assert_ratios(
        run_small(script, "--no-flambe"), REMOTE_RATIOS if script == "bench_remote" else RATIOS
    )


def test_export_benchmark_runs_small() -> None:
    assert_ratios(run_small("bench_export"), ("export ratio",))


@pytest.mark.oracle
@pytest.mark.skipif(find_oracle() is None, reason="the flambe oracle is not installed")
def test_benchmark_times_flambe() -> None:
    out = run_small("bench_compress")
    assert_ratios(out, (*RATIOS, "flambe 0.4.18 save ratio", "flambe 0.4.18 load ratio"))

"""Batches through the command line, killed half-way: a worker process, then the whole
client. The rerun with the same ledger completes every archive exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from flambe_compat import validate
from flambe_compat.container import MAX_UNPACKED_ENV
from flambe_compat.ledger import read_records
from tests.bulkstore import BAD, BOMB_CAP, make_store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def good_store(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "store"
    relative = [name for name in make_store(root) if name not in BAD]
    for name in BAD:
        path = root / name
        if path.is_dir():
            for item in sorted(path.rglob("*"), reverse=True):
                item.unlink()
            path.rmdir()
        else:
            path.unlink()
    return root, relative


def start(*args: str | Path, temporary: Path) -> subprocess.Popen[str]:
    environment = {**os.environ, MAX_UNPACKED_ENV: str(BOMB_CAP), "TMPDIR": str(temporary)}
    return subprocess.Popen(
        [sys.executable, "-m", "flambe_compat", *map(str, args)],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the client and its workers
    )


def wait_for_records(ledger: Path, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while len(list(read_records(ledger))) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.02)


def completed(ledger: Path) -> Counter[str]:
    return Counter(r["relative"] for r in read_records(ledger) if r["verdict"] != "failed")


def test_a_killed_worker_process_is_replaced_and_the_rerun_completes(
    good_store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, relative = good_store
    ledger = tmp_path / "ledger.jsonl"
    argv = ("validate", root, "--ledger", ledger, "--workers", "2", "--retries", "0")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    batch = start(*argv, temporary=temporary)
    wait_for_records(ledger, 8, batch)
    # kill workers until one dies mid-archive (one may be between two archives)
    while batch.poll() is None and not any(
        "died" in str(r.get("reason")) for r in read_records(ledger)
    ):
        workers = psutil.Process(batch.pid).children()
        if workers:
            workers[0].kill()
        time.sleep(0.2)
    _, err = batch.communicate(timeout=300)
    first = list(read_records(ledger))
    failed = [r for r in first if r["verdict"] == "failed"]
    assert failed and all("worker process died (signal 9)" in r["reason"] for r in failed), err
    assert batch.returncode == 1 and sorted(r["relative"] for r in first) == relative
    assert not list(temporary.iterdir())  # what the killed workers unpacked went too

    rerun = subprocess.run(
        [sys.executable, "-m", "flambe_compat", *map(str, argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"({len(relative) - len(failed)} from the ledger)" in rerun.stdout
    assert completed(ledger) == Counter(relative)  # each archive done once, none lost


def test_a_killed_client_loses_nothing(good_store: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, relative = good_store
    out = tmp_path / "out"
    ledger = tmp_path / "ledger.jsonl"
    argv = ("upgrade", root, out, "--ledger", ledger, "--workers", "2")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    batch = start(*argv, temporary=temporary)
    wait_for_records(ledger, 10, batch)
    os.killpg(batch.pid, signal.SIGKILL)
    batch.communicate(timeout=60)
    before = completed(ledger)
    assert 10 <= sum(before.values()) < len(relative)

    rerun = start(*argv, temporary=temporary)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert completed(ledger) == Counter(relative)
    for name in relative:
        report = validate(out / name)
        assert (report.valid, report.revision) == (True, "2.0"), name
    assert not [p for p in out.rglob("*") if ".flambe-compat-" in p.name]

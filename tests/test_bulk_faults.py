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
    client = psutil.Process(batch.pid)
    workers = [p for p in client.children() if p.cmdline() == client.cmdline()]
    assert workers, "no worker process to kill"
    workers[0].kill()
    _, err = batch.communicate(timeout=300)
    assert batch.returncode == 0, err  # the archives in flight ran again on a new pool
    assert sorted(r["relative"] for r in read_records(ledger)) == relative
    assert not list(temporary.iterdir())  # what the killed worker unpacked went too

    rerun = start(*argv, temporary=temporary)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"({len(relative)} from the ledger)" in out
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

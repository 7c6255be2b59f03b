"""Batches on Dask: a LocalCluster of 2 worker processes against the local S3 server.

One cluster and one server for the module (each takes seconds to start). The cluster
is made with the settings `run_batch` gives its own LocalCluster, and the batches join
it through its address, as with `--executor dask://HOST:PORT`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("moto")
pytest.importorskip("s3fs")

from flambe_compat import validate  # noqa: E402
from flambe_compat.bulk import (  # noqa: E402
    DASK_SETTINGS,
    ArchiveResult,
    Options,
    find_archives_below,
    run_batch,
)
from flambe_compat.cli import main  # noqa: E402
from flambe_compat.container import MAX_UNPACKED_ENV  # noqa: E402
from flambe_compat.ledger import read_records  # noqa: E402
from tests.bulkstore import BAD, BOMB_CAP, hanging_pickle, make_store  # noqa: E402
from tests.corpus import CORPUS  # noqa: E402
from tests.s3server import S3Server, free_port  # noqa: E402

QUICK = Options(retries=0, time_limit=120)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    import fsspec.config
    import s3fs

    server = _separate_server()
    with pytest.MonkeyPatch.context() as patch:
        server.apply(patch)  # in os.environ before the workers start: they inherit it
        patch.setenv(MAX_UNPACKED_ENV, str(BOMB_CAP))
        # hundreds of requests at once on 2 busy cores: s3fs's own patience
        patch.setattr(s3fs.S3FileSystem, "retries", 5)
        patch.setitem(fsspec.config.conf, "s3", {"config_kwargs": {"connect_timeout": 60}})
        yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(s3: S3Server) -> Iterator[Any]:
    import dask

    with (
        dask.config.set(DASK_SETTINGS),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=0,
            dashboard_address=":0",
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def s3_store(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, list[str]]:
    """The generated store on the server, and the local folder it was uploaded from."""
    import s3fs

    root = tmp_path_factory.mktemp("s3store") / "store"
    relative = make_store(root, copies=3)
    bucket = s3.bucket("bulk")
    s3fs.S3FileSystem().put(f"{root}/", f"{bucket}/store", recursive=True)
    return f"s3://{bucket}/store", root, relative


@dataclass
class _ServerProcess:
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _separate_server() -> S3Server:
    """moto's server in a process of its own: hundreds of requests from the workers are
    served without waiting for this process's interpreter lock."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto's server did not start") from None
            time.sleep(0.1)
    return S3Server(_ServerProcess(process), endpoint)


def executor(client: Any) -> str:
    return "dask://" + client.scheduler.address.removeprefix("tcp://")


def test_s3_batch_verdicts_equal_the_single_archive_command(
    cluster: Any, s3_store: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    prefix, local, relative = s3_store
    assert len(relative) >= 200
    ledger = tmp_path / "ledger.jsonl"
    results = list(
        run_batch("validate", prefix, options=QUICK, executor=executor(cluster), ledger=ledger)
    )
    assert sorted(r.relative for r in results) == relative
    assert all(r.fingerprint.startswith(("etag:", "tree:")) for r in results)
    by_name = {r.relative: r for r in results}
    assert {by_name[name].verdict for name in BAD} == {"invalid"}
    # every archive against the single-archive validation of the same bytes on disk; the
    # broken ones and one of each corpus archive also against the single-archive command
    # on the store (each such call downloads the archive again)
    sample = {*BAD, *(name for name in relative if name.startswith("copy2/0.4.13-legacy/"))}
    for name in relative:
        single = validate(local / name)
        result = by_name[name]
        assert result.verdict == ("valid" if single.valid else "invalid"), name
        assert (result.revision, result.problems) == (single.revision, single.problems), name
        if name in sample:
            assert main(["validate", f"{prefix}/{name}"]) == (0 if single.valid else 1), name
    again = list(
        run_batch("validate", prefix, options=QUICK, executor=executor(cluster), ledger=ledger)
    )
    assert all(r.resumed for r in again) and len(list(read_records(ledger))) == len(relative)


def test_s3_bulk_upgrade_writes_validated_outputs(
    cluster: Any, s3_store: tuple[str, Path, list[str]]
) -> None:
    prefix, _, relative = s3_store
    source = f"{prefix}/copy1/0.4.6-legacy"
    destination = prefix.replace("/store", "/upgraded")
    before = _etags(source)
    results = list(
        run_batch("upgrade", source, destination, options=QUICK, executor=executor(cluster))
    )
    assert _etags(source) == before
    assert len(results) == len([r for r in relative if r.startswith("copy1/0.4.6-legacy/")])
    for result in results:
        assert (result.verdict, result.output) == ("upgraded", f"{destination}/{result.relative}")
        report = validate(str(result.output))
        assert (report.valid, report.revision) == (True, "2.0"), result.relative


def _etags(prefix: str) -> dict[str, str]:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    return {name: info["ETag"] for name, info in fs.find(prefix, detail=True).items()}


def test_a_killed_worker_fails_its_archive_and_a_rerun_completes(
    cluster: Any, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    relative = [name for name in make_store(store) if name not in BAD]
    for name in BAD:
        _remove(store / name)
    ledger = tmp_path / "ledger.jsonl"
    first: list[ArchiveResult] = []
    for result in run_batch(
        "validate", str(store), options=QUICK, executor=executor(cluster), ledger=ledger
    ):
        first.append(result)
        # kill a worker every few results until one dies mid-archive (not between two)
        if len(first) % 6 == 0 and not any(r.verdict == "failed" for r in first):
            with contextlib.suppress(Exception):  # a worker may be restarting
                os.kill(next(iter(cluster.run(os.getpid).values())), signal.SIGKILL)
    failed = [r for r in first if r.verdict == "failed"]
    assert failed and all("worker process died" in str(r.reason) for r in failed)
    assert sorted(r.relative for r in first) == relative
    second = list(
        run_batch("validate", str(store), options=QUICK, executor=executor(cluster), ledger=ledger)
    )
    assert {r.relative for r in second if not r.resumed} == {r.relative for r in failed}
    assert {r.verdict for r in second} == {"valid"}
    done = [r["relative"] for r in read_records(ledger) if r["verdict"] != "failed"]
    assert sorted(done) == relative  # each archive completed exactly once, none lost


def test_a_hanging_archive_kills_only_its_worker(cluster: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    relative = make_store(store)
    hanging_pickle(store / "bad" / "hang.pkl")
    options = Options(retries=0, time_limit=3)
    results = {
        r.relative: r
        for r in run_batch("validate", str(store), options=options, executor=executor(cluster))
    }
    assert results["bad/hang.pkl"].verdict == "failed"
    assert "worker process died" in str(results["bad/hang.pkl"].reason)
    assert sorted(results) == sorted([*relative, "bad/hang.pkl"])
    assert all(r.verdict != "failed" for name, r in results.items() if name != "bad/hang.pkl")
    cluster.wait_for_workers(2, timeout=120)  # the nanny starts a new worker


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def test_the_local_executor_reads_the_store_too(s3_store: tuple[str, Path, list[str]]) -> None:
    prefix, _, relative = s3_store
    source = f"{prefix}/copy0/0.4.18-zip"
    results = list(run_batch("validate", source, options=QUICK, jobs=2))
    expected = [name for name in relative if name.startswith("copy0/0.4.18-zip/")]
    assert len(results) == len(expected) and {r.verdict for r in results} == {"valid"}


def test_the_command_line_starts_its_own_local_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    folder = CORPUS / "0.4.6-legacy"
    argv = ["validate", str(folder), "--executor", "dask", "--workers", "2", "--jsonl"]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["summary"]["verdicts"] == {"valid": len(lines) - 1}
    assert len(lines) - 1 == len(find_archives_below(str(folder)))

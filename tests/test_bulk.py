"""Batches on local folders: discovery, the process-pool executor, ledger and resume,
limits, retries, bulk upgrades and the batch form of the command line."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from flambe_compat import State, load_state_from_file, save_state_to_file, validate
from flambe_compat.bulk import (
    ArchiveResult,
    Options,
    Summary,
    _Job,
    _process,
    find_archives_below,
    run_batch,
)
from flambe_compat.cli import main
from flambe_compat.container import MAX_UNPACKED_ENV
from flambe_compat.errors import LoadError
from flambe_compat.ledger import read_records
from flambe_compat.store import StoreError
from flambe_compat.tree import node_metadata
from tests.bulkstore import BAD, BOMB_CAP, hanging_pickle, make_store
from tests.corpus import CORPUS, snapshot
from tests.test_publish import dead_pid

QUICK = Options(retries=0, time_limit=120)


@pytest.fixture(autouse=True)
def _small_unpack_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bomb of the generated stores trips this cap in a fraction of a second."""
    monkeypatch.setenv(MAX_UNPACKED_ENV, str(BOMB_CAP))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("bulk") / "store"
    return root, make_store(root)


def verdicts(results: list[ArchiveResult]) -> dict[str, str]:
    return {result.relative: result.verdict for result in results}


# --- discovery ---


def test_one_listing_finds_archives_not_their_nodes(tmp_path: Path) -> None:
    shutil.copytree(CORPUS / "0.4.18-zip" / "wrapper-dir", tmp_path / "a" / "wrapper-dir")
    (tmp_path / "a" / "b").mkdir()
    shutil.copyfile(CORPUS / "0.4.3-legacy" / "mlp-pkl.pkl", tmp_path / "a" / "b" / "m.pkl")
    shutil.copyfile(CORPUS / "0.4.6-legacy" / "counter-tgz.tar.gz", tmp_path / "c.tar.gz")
    shutil.copyfile(CORPUS / "0.4.6-legacy" / "mlp-pkltgz.pkl.tar.gz", tmp_path / "d.pkl.tar.gz")
    shutil.copytree(CORPUS / "0.4.18-zip" / "counter-dir", tmp_path / "e.bak")
    shutil.copytree(CORPUS / "0.4.18-zip" / "mlp-dir", tmp_path / ".e.flambe-compat-tmp-1-x")
    (tmp_path / "notes.txt").write_text("not an archive")

    found = find_archives_below(str(tmp_path))
    assert [f.relative for f in found] == [
        "a/b/m.pkl",
        "a/wrapper-dir",
        "c.tar.gz",
        "d.pkl.tar.gz",
        "e.bak",
    ]
    folder = found[1]
    files = [p for p in (tmp_path / "a" / "wrapper-dir").rglob("*") if p.is_file()]
    assert folder.size == sum(p.stat().st_size for p in files)
    assert folder.fingerprint.startswith("tree:")
    assert found[2].url == f"{tmp_path}/c.tar.gz"
    upgradable = find_archives_below(str(tmp_path), skip_backups=True)
    assert "e.bak" not in [f.relative for f in upgradable]


def test_a_prefix_that_is_an_archive_is_the_one_archive() -> None:
    folder = CORPUS / "0.4.18-zip" / "wrapper-dir"
    [found] = find_archives_below(str(folder))
    assert (found.url, found.relative) == (str(folder), "")
    [single] = find_archives_below(str(CORPUS / "0.4.3-legacy" / "mlp-pkl.pkl"))
    assert single.size == (CORPUS / "0.4.3-legacy" / "mlp-pkl.pkl").stat().st_size


def test_a_changed_file_in_a_folder_archive_changes_its_fingerprint(tmp_path: Path) -> None:
    archive = shutil.copytree(CORPUS / "0.4.18-zip" / "mlp-dir", tmp_path / "m")
    before = find_archives_below(str(tmp_path))[0]
    version = next(archive.rglob("version.txt"))
    version.write_text(version.read_text())
    os.utime(version, ns=(1, 1))
    after = find_archives_below(str(tmp_path))[0]
    assert (after.size, after.fingerprint != before.fingerprint) == (before.size, True)


@pytest.mark.parametrize("name", ["missing", "empty"])
def test_nothing_to_process_is_an_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("")
    with pytest.raises(LoadError, match=name if name == "missing" else "no flambe archive"):
        find_archives_below(str(tmp_path / name))


# --- batches on the local executor ---


def test_verdicts_equal_single_archive_validation_and_resume(
    store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, relative = store
    ledger = tmp_path / "ledger.jsonl"
    first = list(run_batch("validate", str(root), options=QUICK, jobs=2, ledger=ledger))
    assert sorted(verdicts(first)) == relative
    for result in first:
        single = validate(root / result.relative)
        assert result.verdict == ("valid" if single.valid else "invalid"), result.relative
        assert (result.revision, result.problems) == (single.revision, single.problems)
    assert {verdicts(first)[name] for name in BAD} == {"invalid"}
    records = list(read_records(ledger))
    assert sorted(r["relative"] for r in records) == relative
    assert all(r["size"] > 0 and r["fingerprint"] and r["seconds"] >= 0 for r in records)

    second = list(run_batch("validate", str(root), options=QUICK, jobs=2, ledger=ledger))
    assert all(result.resumed for result in second)
    assert verdicts(second) == verdicts(first)
    assert len(list(read_records(ledger))) == len(relative)

    changed = root / "bad" / "garbage.pkl"
    changed.write_bytes(changed.read_bytes() + b"\0")
    third = list(run_batch("validate", str(root), options=QUICK, jobs=2, ledger=ledger))
    assert [r.relative for r in third if not r.resumed] == ["bad/garbage.pkl"]
    summary = Summary.of(third, 1.0)
    assert (summary.archives, summary.processed, summary.resumed) == (
        len(relative),
        1,
        len(relative) - 1,
    )
    assert summary.verdicts == {"invalid": len(BAD), "valid": len(relative) - len(BAD)}
    assert not summary.ok


def test_a_hanging_archive_is_stopped_and_the_batch_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    for name in ("counter-dir", "mlp-pkl.pkl", "wrapper-tgz.tar.gz"):
        source = CORPUS / "0.4.18-zip" / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, store / name)
    hanging_pickle(tmp_path / "hang.pkl")
    with tarfile.open(store / "hang.pkl.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "hang.pkl", "hang.pkl")  # unpacked to a temporary folder first
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    options = Options(retries=0, time_limit=3)
    results = {r.relative: r for r in run_batch("validate", str(store), options=options, jobs=2)}
    assert results["hang.pkl.tar.gz"].verdict == "failed"
    assert "time limit of 3 s" in str(results["hang.pkl.tar.gz"].reason)
    assert {name: r.verdict for name, r in results.items() if name != "hang.pkl.tar.gz"} == {
        "counter-dir": "valid",
        "mlp-pkl.pkl": "valid",
        "wrapper-tgz.tar.gz": "valid",
    }
    assert not list(temporary.iterdir())  # the killed worker's unpacked copy went too


def test_an_archive_over_the_memory_limit_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = State({"weight": torch.zeros(12 << 20, dtype=torch.float32)})  # 48 MiB, gzips small
    big._metadata = {"_flambe_directories": {""}, "": node_metadata("Big")}
    save_state_to_file(big, str(tmp_path / "big"), compress=True)
    shutil.copyfile(CORPUS / "0.4.18-zip" / "mlp-pkl.pkl", tmp_path / "small.pkl")
    options = Options(retries=0, memory_limit=16 << 20)
    out = tmp_path.parent / f"{tmp_path.name}-out"
    monkeypatch.delenv(MAX_UNPACKED_ENV)
    results = {
        r.relative: r for r in run_batch("upgrade", str(tmp_path), str(out), options=options)
    }
    assert results["big.tar.gz"].verdict == "failed", results["big.tar.gz"]
    assert "memory limit" in str(results["big.tar.gz"].reason)
    assert results["small.pkl"].verdict == "upgraded"
    assert sorted(p.name for p in out.iterdir()) == ["small.pkl"]


def test_bulk_upgrade_keeps_the_single_archive_guarantees(
    store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, relative = store
    source = tmp_path / "src"
    for name in relative[:: len(relative) // 12]:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (root / name).is_dir() else shutil.copyfile)(root / name, target)
    before = snapshot(source)
    out = tmp_path / "out"
    ledger = tmp_path / "ledger.jsonl"
    results = list(
        run_batch("upgrade", str(source), str(out), options=QUICK, jobs=2, ledger=ledger)
    )
    assert snapshot(source) == before
    for result in results:
        if result.verdict == "upgraded":
            report = validate(str(result.output))
            assert (report.valid, report.revision) == (True, "2.0")
            assert result.output == str(out / result.relative)
        else:
            assert result.verdict == "invalid" and result.relative.startswith("bad/")
            assert not (out / result.relative).exists()
    assert not [p for p in out.rglob("*") if ".flambe-compat-" in p.name]
    again = list(run_batch("upgrade", str(source), str(out), options=QUICK, ledger=ledger))
    assert all(r.resumed for r in again)

    in_place = list(run_batch("upgrade", str(out), options=QUICK, jobs=2))
    assert {r.verdict for r in in_place} == {"current"}


def test_bulk_upgrade_in_place_keeps_a_backup(tmp_path: Path) -> None:
    legacy = shutil.copytree(CORPUS / "0.4.3-legacy" / "counter-dir", tmp_path / "a" / "m")
    before = snapshot(legacy)
    [upgraded] = run_batch("upgrade", str(tmp_path), options=QUICK)
    assert (upgraded.verdict, upgraded.output, upgraded.revision) == (
        "upgraded",
        str(legacy),
        "1.0",
    )
    assert validate(legacy).revision == "2.0"
    assert snapshot(tmp_path / "a" / "m.bak") == before
    [again] = run_batch("upgrade", str(tmp_path), options=QUICK)
    assert (again.verdict, again.relative) == ("current", "a/m")


def test_an_output_left_by_a_killed_run_counts_once_validated(tmp_path: Path) -> None:
    source = shutil.copytree(CORPUS / "0.4.13-legacy" / "mlp-dir", tmp_path / "src" / "m")
    out = tmp_path / "out"
    [first] = run_batch("upgrade", str(source.parent), str(out), options=QUICK)
    [again] = run_batch("upgrade", str(source.parent), str(out), options=QUICK)
    assert (first.verdict, again.verdict) == ("upgraded", "upgraded")
    assert "already there" in str(again.reason)
    shutil.copyfile(CORPUS / "0.4.3-legacy" / "mlp-pkl.pkl", tmp_path / "src" / "p.pkl")
    (out / "p.pkl").write_bytes(b"something else")
    results = {r.relative: r for r in run_batch("upgrade", str(source.parent), str(out))}
    assert results["p.pkl"].verdict == "failed"
    assert "already exists" in str(results["p.pkl"].reason)
    assert (out / "p.pkl").read_bytes() == b"something else"


def test_a_rerun_sweeps_the_scratch_a_killed_worker_left_beside_its_output(
    tmp_path: Path,
) -> None:
    source = shutil.copytree(CORPUS / "0.4.13-legacy" / "mlp-dir", tmp_path / "src" / "m")
    out = tmp_path / "out"
    [first] = run_batch("upgrade", str(source.parent), str(out), options=QUICK)
    # killed after publishing, before its scratch folder went: the ledger never heard of it
    left = out / f".m.flambe-compat-tmp-{dead_pid()}-abc_1"
    left.mkdir()
    [again] = run_batch("upgrade", str(source.parent), str(out), options=QUICK)
    assert (first.verdict, again.verdict) == ("upgraded", "upgraded")
    assert sorted(p.name for p in out.iterdir()) == ["m"]


# --- retries, in this process ---


def _job(archive: Path, retries: int) -> _Job:
    [found] = find_archives_below(str(archive))
    return _Job("validate", found, None, Options(retries=retries, backoff=0.01))


def test_transient_store_errors_are_retried_then_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive = CORPUS / "0.4.18-zip" / "mlp-pkl.pkl"
    calls: list[str] = []

    def flaky(path: Any, **options: Any) -> Any:
        calls.append(str(path))
        if len(calls) <= 2:
            raise StoreError(f"{path}: cannot read: ClientConnectorError: connection reset")
        return validate(path, **options)

    monkeypatch.setattr("flambe_compat.bulk.validate", flaky)
    result = _process(_job(archive, retries=3))
    assert (result.verdict, result.attempts) == ("valid", 3)

    calls.clear()
    result = _process(_job(archive, retries=1))
    assert (result.verdict, result.attempts) == ("failed", 2)
    assert str(result.reason).startswith("store error:")


def test_permanent_store_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(path: Any, **options: Any) -> Any:
        raise StoreError(f"{path}: no such file or directory")

    monkeypatch.setattr("flambe_compat.bulk.validate", gone)
    result = _process(_job(CORPUS / "0.4.18-zip" / "mlp-pkl.pkl", retries=3))
    assert (result.verdict, result.attempts) == ("failed", 1)
    assert "no such file" in str(result.reason)


# --- the command line ---


def test_batch_command_line(
    store: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, relative = store
    ledger = tmp_path / "ledger.jsonl"
    argv = ["validate", str(root), "--batch", "--workers", "2", "--ledger", str(ledger)]
    assert main([*argv, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["summary"]["archives"] == len(relative)
    assert document["summary"]["verdicts"] == {
        "invalid": len(BAD),
        "valid": len(relative) - len(BAD),
    }
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"{len(relative)} archives ({len(relative)} from the ledger)" in out
    good = root / "copy0" / "0.4.18-zip"
    assert main(["validate", str(good), "--batch", "--workers", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"{good}/mlp-dir: valid (revision 1.4)" in lines


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "missing-folder", "--batch"],
        ["validate", "a", "b", "--batch"],
        ["upgrade", "fixtures", "--batch", "--dry-run"],
        ["validate", "fixtures", "--batch", "--memory-limit", "lots"],
        ["validate", "fixtures", "--executor", "yarn"],
        ["validate", "fixtures", "--batch", "--workers", "0"],
    ],
)
def test_batch_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "flambe-compat:" in capsys.readouterr().err


def test_a_destination_inside_the_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="inside the source"):
        list(run_batch("upgrade", str(tmp_path), str(tmp_path / "out")))


def test_batch_sarif_and_jsonl(
    store: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    from jsonschema import Draft4Validator

    root, relative = store
    argv = ["validate", str(root), "--batch", "--workers", "2"]
    assert main([*argv, "--format", "sarif"]) == 1
    log = json.loads(capsys.readouterr().out)
    schema = json.loads((Path(__file__).parent / "sarif" / "sarif-schema-2.1.0.json").read_text())
    Draft4Validator(schema).validate(log)
    located = {
        result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        for result in log["runs"][0]["results"]
    }
    for name in BAD:  # at the archive, or at the file a problem names in a folder archive
        assert any(name in uri for uri in located), name
    assert all("/bad/" in uri for uri in located)

    assert main([*argv, "--jsonl"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["relative"] for line in lines[:-1]) == relative
    assert lines[-1]["summary"]["archives"] == len(relative)


def test_bulk_export(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for name in ("mlp-dir", "mlp-pkl.pkl", "wrapper-pkltgz.pkl.tar.gz"):
        path = CORPUS / "0.4.13-legacy" / name
        (shutil.copytree if path.is_dir() else shutil.copyfile)(path, source / "a" / name)
    (source / "bad").mkdir()
    (source / "bad" / "garbage.pkl").write_bytes(b"\x80\x02not a pickle")
    before = snapshot(source)
    out = tmp_path / "out"
    options = Options(retries=0, export_to="torch")
    results = {r.relative: r for r in run_batch("export", str(source), str(out), options=options)}
    assert snapshot(source) == before
    assert results["bad/garbage.pkl"].verdict == "invalid"
    assert not (out / "bad").exists()
    for name in ("a/mlp-dir", "a/mlp-pkl.pkl", "a/wrapper-pkltgz.pkl.tar.gz"):
        assert results[name].verdict == "exported"
        stem = name.removesuffix(".tar.gz").removesuffix(".pkl")
        assert results[name].output == f"{out}/{stem}.pt"
        state = torch.load(f"{out}/{stem}.pt", weights_only=True)
        assert list(state) == list(load_state_from_file(str(source / name))), name
    again = run_batch("export", str(source), str(out), options=options)
    assert {r.reason for r in again if r.ok} == {"the output was already there"}


def test_two_archives_exporting_to_one_output_are_refused(tmp_path: Path) -> None:
    shutil.copyfile(CORPUS / "0.4.13-legacy" / "mlp-pkl.pkl", tmp_path / "m.pkl")
    shutil.copyfile(CORPUS / "0.4.13-legacy" / "mlp-tgz.tar.gz", tmp_path / "m.tar.gz")
    with pytest.raises(LoadError, match="would both be written"):
        list(run_batch("export", str(tmp_path), str(tmp_path.parent / "out")))


def test_a_ledger_record_stands_only_for_the_same_output(tmp_path: Path) -> None:
    source = shutil.copytree(CORPUS / "0.4.11-legacy" / "counter-dir", tmp_path / "src" / "m")
    ledger = tmp_path / "ledger.jsonl"
    first = tmp_path / "first"
    [done] = run_batch("upgrade", str(source.parent), str(first), options=QUICK, ledger=ledger)
    [again] = run_batch("upgrade", str(source.parent), str(first), options=QUICK, ledger=ledger)
    second = tmp_path / "second"
    [elsewhere] = run_batch(
        "upgrade", str(source.parent), str(second), options=QUICK, ledger=ledger
    )
    assert (done.resumed, again.resumed, elsewhere.resumed) == (False, True, False)
    assert elsewhere.output == f"{second}/m" and validate(second / "m").revision == "2.0"


def test_jsonl_asks_for_the_batch_form_of_upgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("counter-pkl.pkl", "mlp-tgz.tar.gz"):
        shutil.copyfile(CORPUS / "0.4.6-legacy" / name, source / name)
    assert main(["upgrade", str(source), str(tmp_path / "out"), "--jsonl", "--workers", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["verdict"] for line in lines[:-1]) == ["upgraded", "upgraded"]
    assert lines[-1]["summary"]["archives"] == 2

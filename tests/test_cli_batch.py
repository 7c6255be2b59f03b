"""The command line on batches and in CI: `inspect --globals`, `validate --jsonl` and
`validate --from-files` (what the pre-commit hook runs)."""

from __future__ import annotations

import collections
import datetime
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from flambe_compat import State, load_state_from_file, save_state_to_file, validate
from flambe_compat.cli import archive_roots, main
from flambe_compat.tree import node_metadata
from tests.corpus import CORPUS, copy_of

GOOD = CORPUS / "0.4.18-zip" / "counter-dir"


@pytest.fixture(scope="module")
def unsafe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three archives: one whose stash names `collections.Counter` and
    `datetime.timedelta`, one whose pickle names `datetime.datetime` and
    `collections.Counter`; and a clean one."""
    root = tmp_path_factory.mktemp("globals")
    (root / "stash").mkdir()
    stash = copy_of("0.4.18-legacy/counter-dir", root / "stash")
    stashed = {"c": collections.Counter("ab"), "t": datetime.timedelta(days=1)}
    torch.save(stashed, stash / "stash.pkl")
    state = load_state_from_file(CORPUS / "0.4.18-zip" / "counter-pkl.pkl")
    state["when"] = datetime.datetime(2020, 1, 2)
    state["tally"] = collections.Counter("xyz")
    with (root / "dated.pkl").open("wb") as file:
        pickle.dump(state, file, protocol=2)
    shutil.copytree(GOOD, root / "clean")
    return root


def test_inspect_globals_lists_every_refused_global_per_file(
    unsafe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "--globals", str(unsafe)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:7] == [
        f"{unsafe / 'clean'}: 0 files naming refused globals",
        f"{unsafe / 'dated.pkl'}: 1 file naming refused globals",
        "  dated.pkl  datetime.datetime, collections.Counter",
        f"{unsafe / 'stash' / 'counter-dir'}: 1 file naming refused globals",
        "  stash.pkl  collections.Counter, datetime.timedelta",
        "",
        "To load with flambe_compat (only if you trust these names):",
    ]
    assert lines[7:] == [
        "  load_state_from_file(path, allow_globals="
        '["collections.Counter", "datetime.datetime", "datetime.timedelta"])',
        "For torch.load(weights_only=True):",
        "  import torch, collections, datetime; torch.serialization.add_safe_globals("
        "[collections.Counter, datetime.datetime, datetime.timedelta])",
    ]


def test_the_printed_lines_accept_the_archives(
    unsafe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "--globals", "--json", str(unsafe)]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["globals"] == ["collections.Counter", "datetime.datetime", "datetime.timedelta"]
    assert [a["files"] for a in found["archives"]] == [
        {},
        {"dated.pkl": ["datetime.datetime", "collections.Counter"]},
        {"stash.pkl": ["collections.Counter", "datetime.timedelta"]},
    ]
    allow = json.loads(found["allow_globals"].removeprefix("allow_globals="))
    for archive in (unsafe / "dated.pkl", unsafe / "stash" / "counter-dir"):
        assert not validate(archive).valid
        assert validate(archive, allow_globals=allow).valid
        load_state_from_file(archive, allow_globals=allow)
    stash = unsafe / "stash" / "counter-dir" / "stash.pkl"
    with pytest.raises(pickle.UnpicklingError):
        torch.load(stash, weights_only=True)
    try:
        exec(found["add_safe_globals"], {})
        assert torch.load(stash, weights_only=True)["t"] == datetime.timedelta(days=1)
    finally:
        torch.serialization.clear_safe_globals()


def test_inspect_globals_of_a_clean_archive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--globals", str(GOOD)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{GOOD}: 0 files naming refused globals",
        "no global outside the allow-list",
    ]


def test_inspect_globals_of_a_missing_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "--globals", str(tmp_path / "nothing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_jsonl_prints_one_report_per_archive(
    unsafe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--jsonl", str(unsafe), str(GOOD)]) == 1
    lines = capsys.readouterr().out.splitlines()
    reports = [json.loads(line) for line in lines]
    expected = [unsafe / "clean", unsafe / "dated.pkl", unsafe / "stash" / "counter-dir", GOOD]
    assert [r["source"] for r in reports] == [str(p) for p in expected]
    assert reports == [validate(path).as_json() for path in expected]


def test_jsonl_in_parallel(unsafe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--jsonl", "-j", "2", str(unsafe)]) == 1
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["valid"] for r in reports] == [True, False, False]


def test_archive_roots_maps_files_to_their_archives(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    wrapper = copy_of("0.4.18-zip/wrapper-dir", tmp_path / "models")
    tarball = copy_of("0.4.18-zip/mlp-tgz.tar.gz", tmp_path / "models")
    (tmp_path / "models" / "notes.txt").write_text("not an archive")
    files = [
        wrapper / "model" / "inner" / "state.pt",
        tmp_path / "models" / "notes.txt",
        tarball,
        wrapper / "protocol_version.txt",
        wrapper / "counter" / "config.yaml",
        tmp_path / "deleted.pkl",  # pre-commit may pass a path no longer there
    ]
    assert archive_roots(files) == [wrapper, tarball]


def test_from_files_validates_the_archives_holding_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = copy_of("0.4.18-zip/wrapper-dir", tmp_path)
    (tmp_path / "bad").mkdir()
    bad = copy_of("0.4.18-zip/counter-dir", tmp_path / "bad")
    (bad / "state.pt").write_bytes(b"truncated")
    changed = [good / "model" / "state.pt", bad / "state.pt", bad / "version.txt"]
    assert main(["validate", "--from-files", *map(str, changed)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{good}: valid") and f"{bad}: invalid" in out
    assert out.count(str(bad)) >= 2 and "2 archives, 1 invalid" in out
    assert main(["validate", "--from-files", str(tmp_path / "README.md")]) == 0
    assert capsys.readouterr().out == ""


def test_inspect_prints_keys_verbatim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = State({"w[bold]": torch.ones(2), "[red]tag": "x"})
    state._metadata = {"_flambe_directories": {""}, "": node_metadata("List[int]")}
    save_state_to_file(state, tmp_path / "m")
    assert main(["inspect", str(tmp_path / "m")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == ".             List[int] 0.0.0"
    assert lines[3:5] == ["    w[bold]   float32          [2]     8 B", "    [red]tag  str"]

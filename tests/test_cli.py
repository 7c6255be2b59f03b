"""`flambe-compat validate` and `inspect`, run through their entry points.

A few commands run as real processes (`python -m flambe_compat`, the console script),
all at once since each imports torch (`runs`); the others run the same `__main__`
module in this process (`cli`).
"""

from __future__ import annotations

import collections
import json
import runpy
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from jsonschema import Draft202012Validator

from flambe_compat.container import opened
from flambe_compat.describe import describe
from flambe_compat.detect import detect
from tests.corpus import CORPUS, archives, copy_of, truncate_storages

REPO = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).with_name("flambe-compat")
REPORT_SCHEMA = json.loads((REPO / "schemas" / "validate-report.json").read_text())
GOOD = CORPUS / "0.4.18-zip" / "counter-dir"
TGZ = CORPUS / "0.4.13-legacy" / "wrapper-tgz.tar.gz"
PICKLE = CORPUS / "0.4.3-legacy" / "mlp-pkl.pkl"
PICKLE_TGZ = CORPUS / "0.4.18-zip" / "wrapper-pkltgz.pkl.tar.gz"

Runs = dict[str, subprocess.CompletedProcess[str]]


def flambe_compat(*args: str | Path, script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the command line: `python -m flambe_compat`, or the installed console script."""
    command = [str(CONSOLE_SCRIPT)] if script else [sys.executable, "-m", "flambe_compat"]
    return subprocess.run(
        [*command, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Archives made for these tests: broken, strict-only, unsafe, truncated; and non-archives."""
    root = tmp_path_factory.mktemp("cli")

    def copy(name: str, label: str) -> Path:
        (root / label).mkdir()
        return copy_of(name, root / label)

    bad = copy("0.4.13-legacy/wrapper-dir", "bad")
    (bad / "model" / "source.py").unlink()
    (bad / "counter" / "version.txt").write_text("Kounter:0.0.0")
    strict = copy("0.4.18-zip/counter-dir", "strict")
    (strict / "notes.txt").write_text("not flambe's")
    stash = copy("0.4.18-legacy/counter-dir", "stash")
    torch.save({"c": collections.Counter("ab")}, stash / "stash.pkl")
    truncated = copy("0.4.18-legacy/wrapper-dir", "truncated")
    for state in truncated.rglob("state.pt"):
        truncate_storages(state)
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no archive here")
    return {
        "bad": bad,
        "strict": strict,
        "stash": stash,
        "truncated": truncated,
        "empty": root / "empty",
        "missing": root / "missing.tar.gz",
    }


@pytest.fixture(scope="module")
def runs(made: dict[str, Path]) -> Runs:
    """The commands run as processes, all at once; the parallel one by the console script."""
    commands: dict[str, tuple[Any, ...]] = {
        "corpus -j 2": ("validate", "--json", "-j", "2", CORPUS),
        "mixed": ("validate", GOOD, made["bad"], made["strict"], made["stash"]),
        "inspect truncated": ("inspect", made["truncated"]),
    }
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        futures = {
            name: pool.submit(flambe_compat, *args, script=name == "corpus -j 2")
            for name, args in commands.items()
        }
    return {name: future.result() for name, future in futures.items()}


@dataclass(frozen=True)
class Outcome:
    """What a command did, as `subprocess.CompletedProcess` reports it."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Outcome]:
    """Run `python -m flambe_compat ARGS` in this process."""

    def run(*args: str | Path) -> Outcome:
        monkeypatch.setattr(sys, "argv", ["flambe-compat", *map(str, args)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            runpy.run_module("flambe_compat", run_name="__main__")
        out, err = capsys.readouterr()
        assert isinstance(exited.value.code, int)
        return Outcome(exited.value.code, out, err)

    return run


def json_report(run: Outcome | subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The `--json` output of `run`, checked against schemas/validate-report.json."""
    report: dict[str, Any] = json.loads(run.stdout)
    Draft202012Validator(REPORT_SCHEMA).validate(report)
    return report


def test_the_console_script_is_installed_next_to_python() -> None:
    assert CONSOLE_SCRIPT.is_file()


def test_validate_finds_and_accepts_the_whole_corpus(runs: Runs) -> None:
    run = runs["corpus -j 2"]
    assert (run.returncode, run.stderr) == (0, "")
    report = json_report(run)
    assert (report["valid"], report["archives"], report["invalid"]) == (True, 78, 0)
    assert sorted(Path(r["source"]) for r in report["reports"]) == sorted(
        a.path for a in archives()
    )
    assert all(r["valid"] and r["problems"] == [] for r in report["reports"])


def test_validate_in_parallel_gives_the_same_reports(
    runs: Runs, cli: Callable[..., Outcome]
) -> None:
    run = cli("validate", "--json", CORPUS)
    assert (run.returncode, run.stderr) == (0, "")
    assert json_report(run) == json_report(runs["corpus -j 2"])


def test_validate_human_summary(runs: Runs, made: dict[str, Path]) -> None:
    run = runs["mixed"]
    assert (run.returncode, run.stderr) == (1, "")
    lines = run.stdout.splitlines()
    assert lines[0] == f"{GOOD}: valid (protocol 1 revision 1.4, folder, 1 node)"
    bad, stash = made["bad"], made["stash"]
    assert lines[1] == f"{bad}: invalid (2 problems)"
    version, source = sorted(lines[2:4])
    assert version == (
        f"  {bad}: counter/version.txt: names class 'Kounter' but state.pt records 'Counter' "
        "[node-metadata]"
    )
    assert source.startswith(
        f"  {bad}: model/source.py: nodes/2/files: 'source.py' is a required property [1.3.json#/"
    )
    assert lines[4].startswith(f"{made['strict']}: valid (protocol 1 revision 1.4")
    assert lines[5] == f"{stash}: invalid (1 problem)"
    assert lines[6].startswith(f"  {stash}: stash.pkl: names the global collections.Counter")
    assert lines[7:] == ["4 archives, 2 invalid"]


def test_validate_json_strict(cli: Callable[..., Outcome], made: dict[str, Path]) -> None:
    mixed = [GOOD, made["bad"], made["strict"], made["stash"]]
    run = cli("validate", "--json", "--strict", "--allow-global", "c.X", *mixed)
    assert run.returncode == 1
    report = json_report(run)
    assert (report["valid"], report["archives"], report["invalid"], report["strict"]) == (
        False,
        4,
        3,
        True,
    )
    good, bad, strict, stash = report["reports"]
    assert good == {
        "source": str(GOOD),
        "valid": True,
        "container": "folder",
        "layout": "folder",
        "protocol": 1,
        "revision": "1.4",
        "nodes": [""],
        "problems": [],
    }
    assert (bad["revision"], bad["nodes"]) == ("1.3", ["", "counter", "model", "model.inner"])
    assert sorted((p["path"], p["rule"].split("#")[0]) for p in bad["problems"]) == [
        ("counter/version.txt", "node-metadata"),
        ("model/source.py", "1.3.json"),
    ]
    assert [(p["path"], p["rule"]) for p in strict["problems"]] == [
        ("notes.txt", "strict-extra-file")
    ]
    assert [(p["path"], p["rule"]) for p in stash["problems"]] == [("stash.pkl", "allow-list")]
    assert "collections.Counter" in stash["problems"][0]["message"]


def test_validate_allow_global(cli: Callable[..., Outcome], made: dict[str, Path]) -> None:
    run = cli("validate", "--allow-global", "collections.Counter", made["stash"], GOOD)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.splitlines()[0].startswith(f"{made['stash']}: valid")


def test_validate_a_missing_path(cli: Callable[..., Outcome], made: dict[str, Path]) -> None:
    run = cli("validate", made["missing"], GOOD)
    assert run.returncode == 2
    assert run.stderr == f"flambe-compat: {made['missing']}: no such file or directory\n"
    assert run.stdout.startswith(f"{GOOD}: valid")


def test_validate_a_folder_without_archives(
    cli: Callable[..., Outcome], made: dict[str, Path]
) -> None:
    run = cli("validate", made["empty"])
    assert (run.returncode, run.stdout) == (2, "")
    assert "no flambe archive found" in run.stderr


@pytest.mark.parametrize(
    "args",
    [("validate",), ("validate", "-j", "0", GOOD), ("validate", "-j", "-3", GOOD), ()],
    ids=["no paths", "-j 0", "-j -3", "no command"],
)
def test_bad_usage(cli: Callable[..., Outcome], args: tuple[str, ...]) -> None:
    run = cli(*args)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr


def test_inspect_a_missing_path(cli: Callable[..., Outcome], made: dict[str, Path]) -> None:
    run = cli("inspect", made["missing"])
    assert (run.returncode, run.stdout) == (2, "")
    assert "no such file or directory" in run.stderr


def test_inspect_a_folder_without_tensor_bytes(runs: Runs, made: dict[str, Path]) -> None:
    run = runs["inspect truncated"]
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.splitlines() == [
        f"{made['truncated']}: protocol 1 revision 1.4 (folder)",
        "NODE / KEY            CLASS / TYPE   SHAPE   SIZE",
        ".                     Wrapper 0.0.0",
        "  counter             Counter 0.0.0",
        "      label           str",
        "      count           int",
        "  model               Stack 2.0.1",
        "      proj.weight     float32        [3, 3]  36 B",
        "      steps           list",
        "    model.inner       MLP 0.0.0",
        "        net.0.weight  float32        [3, 3]  36 B",
        "        net.0.bias    float32        [3]     12 B",
        "        name          str",
        "tensor data                                  84 B",
    ]


def test_inspect_a_tarball(cli: Callable[..., Outcome]) -> None:
    run = cli("inspect", TGZ)
    assert (run.returncode, run.stderr) == (0, "")
    lines = run.stdout.splitlines()
    assert lines[0] == f"{TGZ}: protocol 1 revision 1.3 (folder in tar.gz)"
    for line in (
        ".                     Wrapper 0.0.0",
        "  model               Stack 2.0.1",
        "      proj.weight     float32        [3, 3]  36 B",
        "    model.inner       MLP 0.0.0",
        "        net.0.bias    float32        [3]     12 B",
    ):
        assert line in lines
    assert lines[-1] == "tensor data                                  84 B"


def test_inspect_a_pickle_only_archive(cli: Callable[..., Outcome]) -> None:
    run = cli("inspect", PICKLE)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.splitlines() == [
        f"{PICKLE}: protocol 1 revision 1.4 (pickle)",
        "NODE / KEY        CLASS / TYPE  SHAPE    SIZE",
        ".                 MLP 0.0.0",
        "    net.0.weight  float32       [8, 4]  128 B",
        "    net.0.bias    float32       [8]      32 B",
        "    net.2.weight  float32       [2, 8]   64 B",
        "    net.2.bias    float32       [2]       8 B",
        "    name          str",
        "tensor data                             232 B",
    ]


def test_inspect_json_prints_the_described_document(cli: Callable[..., Outcome]) -> None:
    run = cli("inspect", "--json", PICKLE_TGZ)
    assert (run.returncode, run.stderr) == (0, "")
    with opened(PICKLE_TGZ) as archive:
        document = describe(archive, detect(archive)).as_json()
    assert json.loads(run.stdout) == document

"""`flambe-compat upgrade` through its entry points (`python -m flambe_compat`, the script).

Every scenario gets its own folder; the commands run at the same time, a few at once, in
one module fixture, and each test checks one of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from flambe_compat import State, load_state_from_file, save_state_to_file, validate
from flambe_compat.tree import node_metadata
from tests.corpus import CORPUS, copy_of, describe, snapshot

REPO = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "flambe-compat"
ALL_STEPS = "1.0->1.1, 1.1->1.2, 1.2->1.3, 1.3->1.4, 1.4->2.0"
FOLDER = {  # relative path in the folder upgraded -> corpus archive
    "a/counter-dir": "0.4.3-legacy/counter-dir",
    "a/b/mlp-pkl.pkl": "0.4.6-legacy/mlp-pkl.pkl",
    "wrapper-tgz.tar.gz": "0.4.11-legacy/wrapper-tgz.tar.gz",
    "counter-pkltgz.pkl.tar.gz": "0.4.13-legacy/counter-pkltgz.pkl.tar.gz",
}


@dataclass(frozen=True)
class Run:
    """One command line run: its exit code and output."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def command(*args: str | Path, script: bool = False) -> list[str]:
    """`flambe-compat upgrade ARGS` as `python -m flambe_compat` or the console script."""
    program = [str(CONSOLE_SCRIPT)] if script else [sys.executable, "-m", "flambe_compat"]
    return [*program, "upgrade", *map(str, args)]


def execute(argv: list[str]) -> Run:
    """Run from the repository, so that `--plugins tests.plugins_example` imports."""
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    return Run(done.returncode, done.stdout, done.stderr)


def save_node(path: Path, class_name: str) -> Path:
    """A protocol 1 save of a `class_name` 1.2.0 holding `level`, with a Counter child."""
    state = State()
    state["level"] = torch.arange(3.0)
    state["counter.count"] = 4
    state._metadata = {
        "_flambe_directories": {"", "counter"},
        "keep_vars": False,
        "": node_metadata(class_name, "1.2.0"),
        "counter": node_metadata("Counter"),
    }
    save_state_to_file(state, path, protocol=1)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def runs(work: Path) -> dict[str, Run]:
    """Prepare every scenario's folder, then run all the commands."""
    for where, name in [
        ("in-place", "0.4.3-legacy/counter-dir"),
        ("to-1.4", "0.4.13-legacy/mlp-tgz.tar.gz"),
        ("bad-plugin", "0.4.18-zip/counter-dir"),
        ("dry-run", "0.4.3-legacy/counter-dir"),
        ("dry-run", "0.4.6-legacy/mlp-pkl.pkl"),
        ("mixed", "0.4.18-zip/counter-dir"),
        ("mixed", "0.4.18-zip/mlp-pkl.pkl"),
        ("mixed", "0.4.18-zip/wrapper-dir"),
    ]:
        (work / where).mkdir(exist_ok=True)
        copy_of(name, work / where)
    (work / "mixed" / "wrapper-dir" / "model" / "state.pt").write_bytes(b"not a torch file")
    shutil.copytree(CORPUS / "0.4.18-legacy" / "counter-dir", work / "mixed" / "counter-dir.bak")
    for relative, name in FOLDER.items():
        (work / "folder" / "src" / relative).parent.mkdir(parents=True, exist_ok=True)
        copy_of(name, (work / "folder" / "src" / relative).parent)
    shutil.copytree(save_node(work / "faulty-original", "Faulty"), work / "faulty" / "faulty")
    save_node(work / "faulty" / "gauge", "Gauge")
    plugins = ("--plugins", "tests.plugins_example")
    commands = {
        "in-place": command(work / "in-place" / "counter-dir", "--progress"),
        "to-1.4": command(
            work / "to-1.4" / "mlp-tgz.tar.gz",
            work / "to-1.4" / "new" / "mlp.tar.gz",
            "--to",
            "1.4",
        ),
        "dry-run": command(work / "dry-run", work / "dry-run-out", "--dry-run"),
        "folder": command(work / "folder" / "src", work / "folder" / "out", "--json"),
        "mixed": command(work / "mixed", "--json"),
        "faulty": command(work / "faulty", *plugins),
        "missing": command(work / "no-such-archive", script=True),
        "bad-plugin": command(work / "bad-plugin", "--plugins", "tests.no_such_plugin"),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(commands, pool.map(execute, commands.values()), strict=True))


def test_an_archive_in_place(runs: dict[str, Run], work: Path) -> None:
    run, source = runs["in-place"], work / "in-place" / "counter-dir"
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{source}: {ALL_STEPS} (original kept as {source}.bak)\n"
    assert snapshot(source.with_name("counter-dir.bak")) == snapshot(
        CORPUS / "0.4.3-legacy" / "counter-dir"
    )
    assert validate(source).revision == "2.0"


def test_progress_goes_to_stderr(runs: dict[str, Run], work: Path) -> None:
    stderr = runs["in-place"].stderr
    assert f"[1/1] {work / 'in-place' / 'counter-dir'}" in stderr
    assert "1.3 -> 1.4" in stderr and "1.4 -> 2.0" in stderr
    assert "[1/" not in runs["folder"].stderr  # off a terminal, only when asked


def test_an_archive_to_a_destination_for_flambe(runs: dict[str, Run], work: Path) -> None:
    run, source = runs["to-1.4"], work / "to-1.4" / "mlp-tgz.tar.gz"
    assert run.returncode == 0, run.stderr
    destination = work / "to-1.4" / "new" / "mlp.tar.gz"
    assert run.stdout == f"{source} -> {destination}: 1.3->1.4\n"
    report = validate(destination)
    assert (report.valid, report.protocol, report.revision) == (True, 1, "1.4")
    assert snapshot(source) == snapshot(CORPUS / "0.4.13-legacy" / "mlp-tgz.tar.gz")
    assert sorted(os.listdir(work / "to-1.4")) == ["mlp-tgz.tar.gz", "new"]


def test_a_dry_run_prints_the_steps_and_writes_nothing(runs: dict[str, Run], work: Path) -> None:
    run = runs["dry-run"]
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"{work / 'dry-run' / 'counter-dir'}: 1.0 -> 2.0: {ALL_STEPS} (dry run)",
        f"{work / 'dry-run' / 'mlp-pkl.pkl'}: 1.4 -> 2.0: 1.4->2.0 (dry run)",
    ]
    assert sorted(os.listdir(work / "dry-run")) == ["counter-dir", "mlp-pkl.pkl"]
    assert snapshot(work / "dry-run" / "counter-dir") == snapshot(
        CORPUS / "0.4.3-legacy" / "counter-dir"
    )
    assert not (work / "dry-run-out").exists()


def test_a_folder_to_a_mirror_folder(runs: dict[str, Run], work: Path) -> None:
    run = runs["folder"]
    assert run.returncode == 0, run.stderr
    report = run.json()
    assert (report["ok"], report["archives"], report["failed"]) == (True, len(FOLDER), 0)
    steps = {
        Path(result["source"]).relative_to(work / "folder" / "src").as_posix(): result["steps"]
        for result in report["results"]
    }
    assert steps == {
        "a/counter-dir": ALL_STEPS.split(", "),
        "a/b/mlp-pkl.pkl": ["1.4->2.0"],
        "wrapper-tgz.tar.gz": ALL_STEPS.split(", ")[2:],
        "counter-pkltgz.pkl.tar.gz": ["1.4->2.0"],
    }
    for relative, name in FOLDER.items():
        upgraded = work / "folder" / "out" / relative
        assert validate(upgraded).revision == "2.0", relative
        assert describe(load_state_from_file(upgraded)) == describe(
            load_state_from_file(CORPUS / name)
        )
        assert snapshot(work / "folder" / "src" / relative) == snapshot(CORPUS / name)


def test_one_invalid_archive_in_a_folder_fails_alone(runs: dict[str, Run], work: Path) -> None:
    """The others are upgraded in place; backups found in the folder are left alone."""
    run, folder = runs["mixed"], work / "mixed"
    assert run.returncode == 1
    report = run.json()
    assert (report["ok"], report["archives"], report["failed"]) == (False, 3, 1)
    errors = {Path(r["source"]).name: r.get("error") for r in report["results"]}
    assert errors["counter-dir"] is None and errors["mlp-pkl.pkl"] is None
    assert "model/state.pt" in errors["wrapper-dir"]
    assert sorted(os.listdir(folder)) == [
        "counter-dir",
        "counter-dir.bak",
        "counter-dir.bak.1",
        "mlp-pkl.pkl",
        "mlp-pkl.pkl.bak",
        "wrapper-dir",
    ]
    assert [validate(folder / name).revision for name in ("counter-dir", "mlp-pkl.pkl")] == [
        "2.0",
        "2.0",
    ]
    assert snapshot(folder / "counter-dir.bak") == snapshot(CORPUS / "0.4.18-legacy/counter-dir")
    assert snapshot(folder / "counter-dir.bak.1") == snapshot(CORPUS / "0.4.18-zip/counter-dir")
    assert snapshot(folder / "wrapper-dir" / "version.txt") == snapshot(
        CORPUS / "0.4.18-zip" / "wrapper-dir" / "version.txt"
    )


def test_plugins_migrate_classes(runs: dict[str, Run], work: Path) -> None:
    run, gauge = runs["faulty"], work / "faulty" / "gauge"
    assert f"{gauge}: 1.4->2.0; . now 2.0.0 (original kept as {gauge}.bak)" in run.stdout
    state = load_state_from_file(gauge)
    assert list(state) == ["reading", "counter.count"]
    assert state._metadata[""]["_flambe_version"] == "2.0.0"
    assert (gauge / "version.txt").read_text() == "Gauge:2.0.0"
    assert (gauge / "counter" / "version.txt").read_text() == "Counter:0.0.0"
    manifest = json.loads((gauge / "manifest.json").read_text())
    assert {node["prefix"]: node["version"] for node in manifest["nodes"]} == {
        "": "2.0.0",
        "counter": "0.0.0",
    }


def test_a_failing_plugin_leaves_its_archive_untouched(runs: dict[str, Run], work: Path) -> None:
    run, folder = runs["faulty"], work / "faulty"
    assert run.returncode == 1
    assert "faulty: upgrade failed: class migration always_fail of Faulty" in run.stderr
    assert "KeyError: 'missing'" in run.stderr and "Traceback" not in run.stderr
    assert sorted(os.listdir(folder)) == ["faulty", "gauge", "gauge.bak"]
    assert snapshot(folder / "faulty") == snapshot(work / "faulty-original")
    assert load_state_from_file(folder / "faulty")._metadata[""]["_flambe_version"] == "1.2.0"


def test_usage_errors_exit_2(runs: dict[str, Run], work: Path) -> None:
    missing, plugin = runs["missing"], runs["bad-plugin"]
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "no-such-archive: no such file or directory" in missing.stderr
    assert (plugin.returncode, plugin.stdout) == (2, "")
    assert "tests.no_such_plugin" in plugin.stderr
    assert os.listdir(work / "bad-plugin") == ["counter-dir"]

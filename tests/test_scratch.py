"""Temporary folders: removed at the end of their block, or by the next one if killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flambe_compat.container import opened
from flambe_compat.scratch import process_alive, sweep_dead, temporary_folder
from tests.test_publish import dead_pid

CORPUS = Path(__file__).parent.parent / "fixtures" / "flambe-corpus"


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield tmp_path


def test_a_temporary_folder_is_named_for_its_process_and_removed(temp_dir: Path) -> None:
    with temporary_folder("unpack") as folder:
        (folder / "f").write_bytes(b"x")
        assert folder.parent == temp_dir
        assert folder.name.startswith(f"flambe-compat-unpack-{os.getpid()}-")
    assert list(temp_dir.iterdir()) == []


def test_a_temporary_folder_is_removed_when_its_block_raises(temp_dir: Path) -> None:
    with pytest.raises(RuntimeError), temporary_folder("unpack"):
        raise RuntimeError("boom")
    assert list(temp_dir.iterdir()) == []


@pytest.mark.parametrize("kind", ["", "Unpack", "un-pack", "a/b"])
def test_a_kind_is_lowercase_letters(kind: str) -> None:
    with pytest.raises(ValueError, match="lowercase letters"), temporary_folder(kind):
        pass


def test_the_sweep_removes_folders_of_dead_processes_only(temp_dir: Path) -> None:
    dead, alive = dead_pid(), os.getpid()
    for name in (f"flambe-compat-unpack-{dead}-abc_1", f"flambe-compat-unpack-{alive}-abc_2"):
        (temp_dir / name / "inner").mkdir(parents=True)
    (temp_dir / f"flambe-compat-unpack-{dead}-file").write_bytes(b"not a folder: kept")
    (temp_dir / f"other-{dead}-abc").mkdir()
    sweep_dead(temp_dir)
    assert {p.name for p in temp_dir.iterdir()} == {
        f"flambe-compat-unpack-{alive}-abc_2",
        f"flambe-compat-unpack-{dead}-file",
        f"other-{dead}-abc",
    }


def test_a_new_temporary_folder_sweeps_first(temp_dir: Path) -> None:
    left = temp_dir / f"flambe-compat-download-{dead_pid()}-abc_1"
    left.mkdir()
    with temporary_folder("unpack"):
        assert not left.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc only")
def test_an_unreaped_dead_process_counts_as_dead(temp_dir: Path) -> None:
    zombie = os.fork()
    if zombie == 0:
        os._exit(0)
    try:
        # until it has exited, without reaping it
        while os.waitid(os.P_PID, zombie, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            time.sleep(0.01)
        os.kill(zombie, 0)  # still there: a zombie
        assert not process_alive(zombie)
        (temp_dir / f"flambe-compat-unpack-{zombie}-abc_1").mkdir()
        sweep_dead(temp_dir)
        assert list(temp_dir.iterdir()) == []
    finally:
        os.waitpid(zombie, 0)


def test_an_unpack_killed_midway_is_swept_by_the_next(temp_dir: Path) -> None:
    archive = CORPUS / "0.4.18-zip" / "mlp-tgz.tar.gz"
    code = (
        "import sys, time\n"
        "from flambe_compat.container import opened\n"
        "with opened(sys.argv[1]):\n"
        "    print('unpacked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(archive)],
        stdout=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(temp_dir)},
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"unpacked\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = list(temp_dir.iterdir())
    assert [p.name.split("-")[3] for p in left] == [str(child.pid)]
    with opened(archive) as unpacked:
        assert unpacked.payload.is_dir()
    assert list(temp_dir.iterdir()) == []

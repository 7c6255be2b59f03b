"""Saves are atomic (`flambe_compat.publish`): an archive appears at its path complete or
not at all.

The crash tests fork a process that saves a 12-node state (both protocols, all four
modes), SIGKILL it at stepped points across the measured duration of a save, and check
that the path holds what it held before (nothing, or the old archive byte for byte) or a
complete new archive; then a normal save to the same path must succeed and leave no
scratch folder behind. Concurrent saves to one path must leave one complete archive.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from flambe_compat import load_state_from_file, publish
from flambe_compat.container import opened
from flambe_compat.integrity import state_from_payload
from flambe_compat.state import State
from flambe_compat.write import archive_path, write_protocol1, write_protocol2
from tests.test_write import MODES, assert_same, checked_manifest, make_state

pytestmark = pytest.mark.slow

WRITERS: dict[int, Callable[..., Path]] = {1: write_protocol1, 2: write_protocol2}
CONFIGS = [(protocol, mode) for protocol in WRITERS for mode in MODES]
KILL_POINTS = 25
NODES, WIDTH = 12, 128
"""12 nodes (73 files) with 64 KiB float32 weights and fp16 biases: 0.7 MB of tensors.

A save's duration, which the kill points sample, comes from its files more than its
bytes; more of either would only stretch the test."""
VALUE_ERROR_EXIT = 3


def fork(save: Callable[[], object]) -> int:
    """Run `save` in a forked child process; returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            save()
            code = 0
        except ValueError:
            code = VALUE_ERROR_EXIT
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait(pid: int, timeout: float = 60.0) -> int:
    """The exit code of child `pid` (negative: killed by that signal), once reaped."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the saving process {pid} hung")
        time.sleep(0.002)


def snapshot(path: Path) -> dict[str, bytes] | bytes | None:
    """Every byte at `path`: a folder's files by name, a file's content, or None."""
    if not os.path.lexists(path):
        return None
    if path.is_dir():
        return {
            p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*"))
            if p.is_file()
        }
    return path.read_bytes()


def litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".flambe-compat-" in p.name)


def read_back(path: Path, protocol: int) -> dict[str, Any]:
    """The flat state of a complete archive; raises for an incomplete or corrupt one."""
    if protocol == 1:
        return dict(load_state_from_file(path))
    with opened(path) as archive:
        if not archive.is_folder:
            value = torch.load(archive.payload, weights_only=True)
            return dict(state_from_payload(value, archive.payload))
        manifest = checked_manifest(archive.payload)
        flat = {}
        for node in manifest["nodes"]:
            dotted = node["prefix"] + "." if node["prefix"] else ""
            loaded = torch.load(archive.payload / node["folder"] / "state.pt", weights_only=True)
            flat.update({dotted + key: value for key, value in loaded.items()})
        return flat


def holds(got: dict[str, Any], state: State) -> bool:
    try:
        assert_same(dict(sorted(got.items())), dict(sorted(state.items())))
    except AssertionError:
        return False
    return True


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


@pytest.mark.parametrize(("protocol", "mode"), CONFIGS, ids=[f"p{p}-{m}" for p, m in CONFIGS])
def test_a_killed_save_leaves_the_old_archive_or_a_complete_new_one(
    tmp_path: Path, protocol: int, mode: str
) -> None:
    compress, pickle_only = MODES[mode]
    old, new = make_state(NODES, WIDTH, seed=1), make_state(NODES, WIDTH, seed=2)
    base = tmp_path / "m"
    target = archive_path(base, compress, pickle_only)

    def save(state: State, overwrite: bool) -> Callable[[], Path]:
        return lambda: WRITERS[protocol](state, base, compress, pickle_only, overwrite)

    save(old, False)()  # warms what every later save finds ready (requirements.txt)
    window = time_to_publish(save(new, False), target)
    jitter = random.Random(f"{protocol}-{mode}")
    outcomes: Counter[str] = Counter()
    for point in range(KILL_POINTS):
        overwrite = point % 2 == 1  # odd points replace the old archive, even ones nothing
        if not overwrite:
            remove(target)
        before = snapshot(target)
        pid = fork(save(new, overwrite))
        # the kill points span 1.5x the median run, so a slow run still ends before one
        time.sleep(window * 1.5 * point / (KILL_POINTS - 1) * jitter.uniform(0.9, 1.1))
        os.kill(pid, signal.SIGKILL)
        killed = wait(pid) == -signal.SIGKILL
        outcomes["killed mid-save"] += killed and bool(litter(tmp_path))
        if snapshot(target) == before:
            outcomes["unchanged"] += 1
        else:
            assert holds(read_back(target, protocol), new), f"kill point {point}"
            outcomes["new"] += 1
        save(old, os.path.lexists(target))()  # a normal save, which sweeps the dead one's scratch
        assert litter(tmp_path) == []
    assert outcomes["killed mid-save"] >= KILL_POINTS // 5, outcomes  # the points hit the save


def time_to_publish(save: Callable[[], object], target: Path) -> float:
    """How long a forked save takes to publish its archive (the median of three)."""
    times = []
    for _ in range(3):
        remove(target)
        pid = fork(save)
        started = time.monotonic()  # as the kill delays, from when fork returns
        while not os.path.lexists(target) and time.monotonic() - started < 60:
            time.sleep(0.0005)
        times.append(time.monotonic() - started)
        assert wait(pid) == 0
    return sorted(times)[1]


@pytest.mark.parametrize(("protocol", "mode"), CONFIGS, ids=[f"p{p}-{m}" for p, m in CONFIGS])
def test_concurrent_saves_leave_one_complete_archive(
    tmp_path: Path, protocol: int, mode: str
) -> None:
    compress, pickle_only = MODES[mode]
    base = tmp_path / "m"
    target = archive_path(base, compress, pickle_only)
    states = [make_state(NODES, WIDTH, seed=seed) for seed in (3, 4)]
    write = WRITERS[protocol]
    for round_ in range(3):
        overwrite = round_ < 2
        remove(target)
        if round_ == 1:
            write(make_state(NODES, WIDTH, seed=5), base, compress, pickle_only)
        pids = [
            fork(lambda s=s, o=overwrite: write(s, base, compress, pickle_only, o)) for s in states
        ]
        codes = [wait(pid) for pid in pids]
        got = read_back(target, protocol)
        if overwrite:
            assert codes == [0, 0]
            assert holds(got, states[0]) or holds(got, states[1])
        else:  # exactly one wins; the other is told the path is taken
            assert sorted(codes) == [0, VALUE_ERROR_EXIT]
            assert holds(got, states[codes.index(0)])
        assert litter(tmp_path) == []


@pytest.fixture(params=["renameat2", "portable"])
def renames(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Publish with Linux renameat2, then with the portable fallback."""
    if request.param == "portable":
        monkeypatch.setattr(publish, "_RENAMEAT2", None)
    elif publish._RENAMEAT2 is None:
        pytest.skip("renameat2 is not available here")
    return str(request.param)


def built(scratch: Path, kind: str, text: str) -> Path:
    """A finished archive in a scratch folder: a folder with one file, or a file."""
    path = scratch / "built"
    if kind == "folder":
        path.mkdir()
        (path / "state.pt").write_text(text)
    else:
        path.write_text(text)
    return path


def content(path: Path) -> str:
    return (path / "state.pt").read_text() if path.is_dir() else path.read_text()


@pytest.mark.parametrize("old_kind", ["folder", "file", "empty folder", "nothing"])
@pytest.mark.parametrize("new_kind", ["folder", "file"])
def test_publish_replaces_any_archive_with_overwrite(
    tmp_path: Path, renames: str, old_kind: str, new_kind: str
) -> None:
    target = tmp_path / "m"
    if old_kind != "nothing":
        built(tmp_path, "file" if old_kind == "file" else "folder", "old").rename(target)
    if old_kind == "empty folder":
        (target / "state.pt").unlink()
    with publish.staging(target) as scratch:
        publish.publish(built(scratch, new_kind, "new"), target, overwrite=True)
    assert content(target) == "new"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("old_kind", ["folder", "file"])
def test_publish_never_replaces_without_overwrite(
    tmp_path: Path, renames: str, old_kind: str
) -> None:
    target = tmp_path / "m"
    built(tmp_path, old_kind, "old").rename(target)
    with publish.staging(target) as scratch, pytest.raises(ValueError, match="overwrite=True"):
        publish.publish(built(scratch, "folder", "new"), target, overwrite=False)
    assert content(target) == "old"
    assert list(tmp_path.iterdir()) == [target]


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_sweep_removes_scratch_of_dead_processes_only(tmp_path: Path) -> None:
    dead, alive = dead_pid(), os.getpid()
    for name in (f".m.flambe-compat-tmp-{dead}-abc_1", f".m.flambe-compat-tmp-{alive}-abc_2"):
        (tmp_path / name).mkdir()
    (tmp_path / "unrelated").mkdir()
    publish.sweep_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".m.flambe-compat-tmp-{alive}-abc_2",
        "unrelated",
    ]


def test_sweep_puts_back_an_old_archive_moved_aside_by_a_dead_process(tmp_path: Path) -> None:
    aside = tmp_path / f".m.flambe-compat-old-{dead_pid()}-0123abcd"
    built(tmp_path, "folder", "old").rename(aside)
    publish.sweep_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["m"] and content(tmp_path / "m") == "old"
    built(tmp_path, "folder", "older").rename(aside)  # the path is taken by then: drop it
    publish.sweep_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["m"] and content(tmp_path / "m") == "old"


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_exchange_keeping_backup(tmp_path: Path, renames: str, kind: str) -> None:
    target = built(tmp_path, kind, "old").rename(tmp_path / "m")
    (tmp_path / "m.bak").mkdir()  # an earlier backup is never overwritten
    with publish.staging(target) as scratch:
        backup = publish.exchange_keeping_backup(built(scratch, kind, "new"), target)
    assert (backup.name, content(target), content(backup)) == ("m.bak.1", "new", "old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.bak", "m.bak.1"]


@pytest.mark.parametrize("exchanged", [True, False])
def test_sweep_keeps_the_original_a_dead_upgrade_exchanged(tmp_path: Path, exchanged: bool) -> None:
    """A process killed around its exchange: the archive in its scratch folder is the
    original (recorded inode) after the exchange, the unpublished new one before."""
    target = built(tmp_path, "folder", "old").rename(tmp_path / "m")
    scratch = tmp_path / f".m.flambe-compat-tmp-{dead_pid()}-abc_1"
    scratch.mkdir()
    new = built(scratch, "folder", "new").rename(scratch / "m")
    record = {"name": "m", "inode": target.lstat().st_ino}
    (scratch / ".flambe-compat-exchange.json").write_text(json.dumps(record))
    if exchanged:
        target.rename(tmp_path / "swap")
        new.rename(target)
        (tmp_path / "swap").rename(scratch / "m")
    publish.sweep_stale(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    if exchanged:
        assert names == ["m", "m.bak"]
        assert (content(tmp_path / "m"), content(tmp_path / "m.bak")) == ("new", "old")
    else:
        assert (names, content(target)) == (["m"], "old")


def backups(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".bak" in p.name)


@pytest.mark.parametrize("mode", ["dir", "tgz"])
def test_a_killed_in_place_upgrade_leaves_the_original_or_the_new_one_and_its_backup(
    tmp_path: Path, mode: str
) -> None:
    """Before the exchange the source is untouched and no backup exists; after it the
    source is the upgraded archive and the original is its backup (once the next save in
    the folder swept the dead process's scratch folder)."""
    compress, _ = MODES[mode]
    state = make_state(NODES, WIDTH, seed=1)
    pristine = write_protocol1(state, tmp_path / "pristine" / "m", compress)
    source = tmp_path / "work" / pristine.name
    original = snapshot(pristine)

    def reset() -> None:
        remove(source)
        for backup in backups(source.parent):
            remove(backup)
        if pristine.is_dir():
            shutil.copytree(pristine, source)
        else:
            shutil.copyfile(pristine, source)

    source.parent.mkdir()
    durations = []
    for _ in range(3):
        reset()
        started = time.monotonic()
        assert wait(fork(lambda: flambe_compat_upgrade(source))) == 0
        durations.append(time.monotonic() - started)
    window = sorted(durations)[1]
    jitter = random.Random(mode)
    outcomes: Counter[str] = Counter()
    for point in range(KILL_POINTS):
        reset()
        pid = fork(lambda: flambe_compat_upgrade(source))
        # the kill points span 1.5x the median run, so a slow run still ends before one
        time.sleep(window * 1.5 * point / (KILL_POINTS - 1) * jitter.uniform(0.9, 1.1))
        os.kill(pid, signal.SIGKILL)
        wait(pid)
        publish.sweep_stale(source.parent)  # what the next save into the folder does first
        assert litter(source.parent) == []
        if snapshot(source) == original:
            assert backups(source.parent) == [], f"kill point {point}"
            outcomes["unchanged"] += 1
        else:
            assert holds(read_back(source, 2), state), f"kill point {point}"
            assert [snapshot(b) for b in backups(source.parent)] == [original]
            outcomes["upgraded"] += 1
    assert outcomes["unchanged"] and outcomes["upgraded"], outcomes


def flambe_compat_upgrade(source: Path) -> None:
    from flambe_compat import upgrade

    upgrade(source)

"""`upgrade()`: corpus archives to 2.0 and back to 1.4, backups, failures that change nothing.

Loading an old revision gives the State its upgraded archive holds (the in-memory upgrade),
and the round trip 2.0 -> 1.4 loses nothing of it.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flambe_compat import ClassMigrations, LoadError, load_state_from_file, upgrade, validate
from flambe_compat.archive import Archive
from flambe_compat.cli import main
from flambe_compat.container import container_kind, opened
from flambe_compat.layout import PICKLE_HEADER_KEY
from flambe_compat.migrate import MigrationError, migrations
from flambe_compat.peek import peek_file
from flambe_compat.upgrade import UpgradeResult
from flambe_compat.write import write_archive
from tests.corpus import CorpusArchive, archives, copy_of, describe, expected_revision, snapshot

ARCHIVES = {archive.id: archive for archive in archives()}
KINDS = {
    "dir": "0.4.6-legacy/wrapper-dir",
    "tar.gz": "0.4.6-legacy/wrapper-tgz.tar.gz",
    "pkl": "0.4.6-legacy/wrapper-pkl.pkl",
    "pkl.tar.gz": "0.4.6-legacy/wrapper-pkltgz.pkl.tar.gz",
}
STAGING_MARK = ".flambe-compat-tmp-"


@dataclass(frozen=True)
class RoundTrip:
    """A corpus archive upgraded to 2.0, that upgraded to 1.4, and the three States read."""

    archive: CorpusArchive
    latest: UpgradeResult
    readable: UpgradeResult
    states: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RoundTrip]:
    folder = tmp_path_factory.mktemp("round-trips")
    trips = {}
    for name, archive in ARCHIVES.items():
        latest = upgrade(archive.path, folder / "2.0" / name)
        readable = upgrade(latest.destination or latest.source, folder / "1.4" / name, to="1.4")
        states = {
            label: describe(load_state_from_file(path))
            for label, path in [
                ("source", archive.path),
                ("2.0", latest.destination),
                ("1.4", readable.destination),
            ]
            if path is not None
        }
        trips[name] = RoundTrip(archive, latest, readable, states)
    return trips


def recorded_original(path: Path) -> Any:
    """The original revision a protocol 2 archive records (manifest or pickle header)."""
    with opened(path) as archive:
        if archive.is_folder:
            manifest = json.loads((archive.payload / "manifest.json").read_text())
            return manifest["original_revision"]
        return peek_file(archive.payload).value[PICKLE_HEADER_KEY]["original_revision"]


@pytest.mark.parametrize("name", ARCHIVES)
def test_loading_an_old_revision_gives_its_upgraded_state(
    round_trips: dict[str, RoundTrip], name: str
) -> None:
    trip = round_trips[name]
    assert trip.states["source"] == trip.states["2.0"]


@pytest.mark.parametrize("name", ARCHIVES)
def test_to_2_0_and_back_to_1_4_keeps_the_state(
    round_trips: dict[str, RoundTrip], name: str
) -> None:
    trip = round_trips[name]
    source_revision = expected_revision(trip.archive)
    assert (trip.latest.source_revision, trip.latest.steps[-1]) == (source_revision, "1.4->2.0")
    assert trip.readable.steps == ["2.0->1.4"]
    assert trip.states["1.4"] == trip.states["source"]
    latest, readable = trip.latest.destination, trip.readable.destination
    assert latest is not None and readable is not None
    assert latest.name == readable.name == trip.archive.path.name
    kinds = {container_kind(path) for path in (trip.archive.path, latest, readable)}
    assert len(kinds) == 1
    report = validate(latest)
    assert (report.valid, report.protocol, report.revision) == (True, 2, "2.0"), report.render()
    assert recorded_original(latest) == source_revision
    report = validate(readable)
    assert (report.valid, report.protocol, report.revision) == (True, 1, "1.4"), report.render()


@pytest.mark.parametrize("kind", KINDS)
def test_in_place_backups_never_overwrite_each_other(tmp_path: Path, kind: str) -> None:
    source = copy_of(KINDS[kind], tmp_path)
    original, state = snapshot(source), describe(load_state_from_file(source))
    backup, second_backup = tmp_path / f"{source.name}.bak", tmp_path / f"{source.name}.bak.1"
    first = upgrade(source)
    assert (first.destination, first.backup) == (source, backup)
    assert snapshot(backup) == original
    assert container_kind(source) == container_kind(backup)
    assert validate(source).revision == "2.0"
    upgraded = snapshot(source)
    assert upgrade(source, to="1.4").backup == second_backup
    assert snapshot(backup) == original
    assert snapshot(second_backup) == upgraded
    assert validate(source).revision == "1.4"
    assert describe(load_state_from_file(source)) == state
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in (source, backup, second_backup))


def test_a_backup_name_taken_by_anything_is_skipped(tmp_path: Path) -> None:
    source = copy_of(KINDS["pkl"], tmp_path)
    for taken in (".bak", ".bak.1"):
        (tmp_path / f"{source.name}{taken}").write_text("the user's own file")
    result = upgrade(source)
    assert result.backup == tmp_path / f"{source.name}.bak.2"
    assert (tmp_path / f"{source.name}.bak").read_text() == "the user's own file"


def test_an_in_place_upgrade_keeps_any_name(tmp_path: Path) -> None:
    """Names flambe would not have chosen stay too (`.tgz`, a pickle named `.pt`)."""
    for name, renamed in [(KINDS["tar.gz"], "model.tgz"), (KINDS["pkl"], "model.pt")]:
        source = copy_of(name, tmp_path).rename(tmp_path / renamed)
        assert upgrade(source).destination == source
        assert validate(source).revision == "2.0"


@pytest.mark.parametrize("kind", KINDS)
def test_an_upgrade_to_a_destination_leaves_the_source_alone(tmp_path: Path, kind: str) -> None:
    source = copy_of(KINDS[kind], tmp_path)
    original = snapshot(source)
    target = tmp_path / "out" / source.name
    result = upgrade(source, target)
    assert (result.destination, result.backup) == (target, None)
    assert container_kind(target) == container_kind(source)
    assert snapshot(source) == original
    assert sorted(os.listdir(tmp_path)) == sorted([source.name, "out"])
    written = snapshot(target)
    with pytest.raises(LoadError, match="already exists"):
        upgrade(source, target, to="1.4")
    assert snapshot(target) == written
    assert os.listdir(tmp_path / "out") == [source.name]


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "to-destination"])
def test_a_dry_run_writes_nothing(tmp_path: Path, in_place: bool) -> None:
    source = copy_of("0.4.3-legacy/counter-tgz.tar.gz", tmp_path)
    original = snapshot(source)
    result = upgrade(source, None if in_place else tmp_path / "new", dry_run=True)
    assert result.steps == ["1.0->1.1", "1.1->1.2", "1.2->1.3", "1.3->1.4", "1.4->2.0"]
    assert (result.dry_run, result.destination, result.backup) == (True, None, None)
    assert os.listdir(tmp_path) == [source.name]
    assert snapshot(source) == original


Failure = tuple[type[Exception], ClassMigrations | None]
"""What an upgrade set up to fail raises, and the class migrations to give it."""


def failing_step(monkeypatch: pytest.MonkeyPatch) -> Failure:
    """The 1.3 -> 1.4 step (half-way from 1.2 to 2.0) raises; the chain names it."""

    def broken(archive: Archive) -> Archive:
        raise RuntimeError("the 1.3 -> 1.4 step broke")

    steps = tuple(
        dataclasses.replace(s, function=broken) if (s.source, s.target) == ("1.3", "1.4") else s
        for s in migrations()
    )
    monkeypatch.setattr("flambe_compat.migrate.migrations", lambda: steps)
    return MigrationError, None


def failing_class_migration(monkeypatch: pytest.MonkeyPatch) -> Failure:
    """A user's Counter migration looks up a key that is not there."""
    registry = ClassMigrations()

    @registry.register("Counter", "0.x", "1.0.0")
    def lose_count(state: dict[str, Any]) -> dict[str, Any]:
        del state["total"]
        return state

    return LoadError, registry


def damaged_write(monkeypatch: pytest.MonkeyPatch, damage: Callable[[Path], None]) -> None:
    """The final write of an upgrade (not the per-step checks) ends with `damage(archive)`."""

    def write(archive: Archive, path: str | Path, compress: bool = False) -> Path:
        built = write_archive(archive, path, compress)
        if STAGING_MARK in str(path):
            damage(built)
        return built

    monkeypatch.setattr(importlib.import_module("flambe_compat.write"), "write_archive", write)


def disk_full(monkeypatch: pytest.MonkeyPatch) -> Failure:
    """Every file of the new archive is written, then the disk is full."""

    def fail(built: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    damaged_write(monkeypatch, fail)
    return OSError, None


def invalid_result(monkeypatch: pytest.MonkeyPatch) -> Failure:
    """The new archive comes out without its root `version.txt`: validation refuses it."""
    damaged_write(monkeypatch, lambda built: (built / "version.txt").unlink())
    return LoadError, None


FAILURES = {
    "migration-step": failing_step,
    "class-migration": failing_class_migration,
    "write": disk_full,
    "validation": invalid_result,
}


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "to-destination"])
@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_half_way_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failure: str, in_place: bool
) -> None:
    """No backup, no destination, no scratch folder left: the source as it was."""
    source = copy_of(KINDS["dir"], tmp_path)
    original = snapshot(source)
    error, registry = FAILURES[failure](monkeypatch)
    with pytest.raises(error):
        upgrade(source, None if in_place else tmp_path / "new", class_migrations=registry)
    assert snapshot(source) == original
    assert os.listdir(tmp_path) == [source.name]


def test_an_invalid_archive_is_refused_untouched(tmp_path: Path) -> None:
    source = copy_of("0.4.18-zip/wrapper-dir", tmp_path)
    (source / "model" / "state.pt").write_bytes(b"not a torch file")
    original = snapshot(source)
    for dry_run in (True, False):
        with pytest.raises(LoadError, match=re.escape("model/state.pt")):
            upgrade(source, dry_run=dry_run)
    with pytest.raises(MigrationError, match="newer"):
        upgrade(copy_of("0.4.18-zip/counter-dir", tmp_path), to="3.0")
    assert snapshot(source) == original
    assert sorted(os.listdir(tmp_path)) == ["counter-dir", "wrapper-dir"]


def test_an_archive_already_at_the_target_is_left_alone_in_place(tmp_path: Path) -> None:
    source = copy_of(KINDS["dir"], tmp_path)
    upgrade(source)
    upgraded = snapshot(source)
    result = upgrade(source)
    assert result.steps == [] and result.backup is None
    assert snapshot(source) == upgraded
    assert sorted(os.listdir(tmp_path)) == sorted([source.name, source.name + ".bak"])


def test_a_plugin_that_fails_to_import_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken_plugin.py").write_text("raise ValueError('bad registration')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = copy_of(KINDS["dir"], tmp_path)
    original = snapshot(source)
    assert main(["upgrade", str(source), "--plugins", "broken_plugin"]) == 2
    assert "ValueError: bad registration" in capsys.readouterr().err
    assert snapshot(source) == original

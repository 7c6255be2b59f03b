"""The migration chain: one documented step per revision change, path finding, checks per step."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flambe_compat.archive import Archive
from flambe_compat.migrate import (
    FLAMBE_READABLE,
    LATEST,
    Migration,
    MigrationError,
    migrations,
    plan,
    run,
)
from flambe_compat.pipeline import decode as decode_inspection
from flambe_compat.pipeline import inspected
from flambe_compat.resources import resource_path
from flambe_compat.revisions import REVISIONS
from flambe_compat.unpickle import Trust
from flambe_compat.upgrade import step_problems
from tests.corpus import archives, describe, expected_revision

ARCHIVES = {archive.id: archive for archive in archives()}
STEPS = {f"{step.source}->{step.target}": step for step in migrations()}


def decode(path: Path) -> Archive:
    """The decoded archive at `path`, as the load path reads it before migrating."""
    with inspected(path) as inspection:
        return decode_inspection(inspection, Trust())


def summary(archive: Archive) -> dict[str, Any]:
    """Everything an `Archive` holds, comparable with `==`."""
    return {
        "state": describe(archive.state()),
        "keep_vars": archive.keep_vars,
        "order": archive.order,
        "revision": archive.revision,
        "layout": archive.layout,
        "requirements": archive.requirements,
        "original_revision": archive.original_revision,
    }


def missing_steps(steps: Iterable[Migration]) -> list[tuple[str, str]]:
    """The single steps the chain needs (each revision to the next, and back to 1.4)."""
    present = {(step.source, step.target) for step in steps}
    needed = [*itertools.pairwise(REVISIONS), (LATEST, FLAMBE_READABLE)]
    return [pair for pair in needed if pair not in present]


@pytest.fixture(scope="module")
def decoded() -> dict[str, Archive]:
    """Every corpus archive decoded in its own revision."""
    return {name: decode(archive.path) for name, archive in ARCHIVES.items()}


def test_every_revision_change_has_a_step() -> None:
    assert missing_steps(migrations()) == []


@pytest.mark.parametrize("dropped", STEPS)
def test_a_revision_without_its_step_is_caught(dropped: str) -> None:
    """What the test above reports when a step file is removed (or a revision added)."""
    remaining = [step for name, step in STEPS.items() if name != dropped]
    source, target = dropped.split("->")
    assert missing_steps(remaining) == [(source, target)]


@pytest.mark.parametrize("revision", REVISIONS[:-1])
def test_every_revision_reaches_the_latest(revision: str) -> None:
    steps = plan(revision, LATEST)
    assert [steps[0].source, steps[-1].target] == [revision, LATEST]
    assert all(a.target == b.source for a, b in itertools.pairwise(steps))


def test_the_latest_goes_back_to_what_flambe_reads() -> None:
    assert [(s.source, s.target) for s in plan(LATEST, "1.4")] == [(LATEST, "1.4")]
    assert plan(LATEST, LATEST) == []


def test_every_shipped_module_is_a_documented_step() -> None:
    folder = resource_path("migrations", "__init__.py").parent
    files = sorted(path.stem for path in folder.glob("m*.py"))
    assert sorted(step.module.rpartition(".")[2] for step in migrations()) == files
    for step in migrations():
        module = sys.modules[step.module]
        assert (step.source, step.target) == (module.SOURCE, module.TARGET)
        assert {module.SOURCE, module.TARGET} <= set(REVISIONS)
        name = f"m{module.SOURCE}_to_{module.TARGET}".replace(".", "_")
        assert step.module.endswith(f".{name}")
        assert module.migrate is step.function and callable(module.migrate)
        assert f"{step.source} -> {step.target}" in (module.__doc__ or "")
        why = module.migrate.__doc__ or ""
        assert len(why.split()) >= 30, f"{step.module}: say what changed in flambe and why"
        assert step.reason and step.reason in why


@pytest.mark.parametrize(
    ("source", "target", "words"),
    [
        ("x", LATEST, ["archive revision 'x' is unknown", "1.0, 1.1"]),
        (LATEST, "x", ["target revision 'x' is unknown"]),
        ("3.0", LATEST, ["'3.0' is newer than this flambe-compat knows"]),
        ("1.0", "2.1", ["target revision '2.1' is newer"]),
        ("2.0", "1.0", ["no migration path from revision 2.0 to 1.0"]),
    ],
)
def test_plan_refuses_clearly(source: str, target: str, words: list[str]) -> None:
    with pytest.raises(MigrationError) as caught:
        plan(source, target)
    for text in words:
        assert text in str(caught.value)


def test_the_original_revision_is_recorded_once(decoded: dict[str, Archive]) -> None:
    oldest = decoded["0.4.3-legacy/counter-dir"]
    assert (oldest.revision, oldest.original_revision) == ("1.0", None)
    halfway = run(oldest, "1.2")
    assert (halfway.revision, halfway.original_revision) == ("1.2", "1.0")
    latest = run(halfway, LATEST)
    back = run(latest, "1.4")
    assert (latest.original_revision, back.original_revision) == ("1.0", "1.0")
    assert "saved as revision 1.0" in (back.requirements or "")
    assert run(oldest, "1.0").original_revision is None


def inputs_of(step: Migration, archives: Iterable[Archive]) -> Iterator[Archive]:
    """What `step` gets on the way of each archive to the latest revision and back to 1.4."""
    for archive in archives:
        for current in [*plan(archive.revision, LATEST), *plan(LATEST, FLAMBE_READABLE)]:
            if current is step:
                yield archive
            archive = current.function(archive)


@pytest.mark.parametrize("name", STEPS)
def test_steps_are_idempotent_and_pure(name: str, decoded: dict[str, Archive]) -> None:
    """A step applied to its own output changes nothing; its input is left as it was."""
    step = STEPS[name]
    inputs = list(inputs_of(step, decoded.values()))
    assert inputs
    for archive in inputs:
        before = summary(archive)
        once = step.function(archive)
        assert summary(archive) == before
        assert once.revision == step.target
        assert summary(step.function(once)) == summary(once)


@pytest.mark.parametrize("name", ARCHIVES)
def test_every_corpus_archive_passes_every_step_check(
    name: str, decoded: dict[str, Archive]
) -> None:
    archive = decoded[name]
    assert archive.revision == expected_revision(ARCHIVES[name])
    latest = run(archive, LATEST, step_problems=step_problems)
    back = run(latest, FLAMBE_READABLE, step_problems=step_problems)
    assert (latest.revision, back.revision) == (LATEST, FLAMBE_READABLE)
    assert describe(back.state()) == describe(latest.state()) == describe(run(archive).state())


def replaced(
    monkeypatch: pytest.MonkeyPatch, changes: dict[str, Callable[[Archive], Archive]]
) -> None:
    """Make `migrations()` return the shipped steps with some functions replaced."""
    patched = tuple(
        dataclasses.replace(step, function=changes.get(name, step.function))
        for name, step in STEPS.items()
    )
    monkeypatch.setattr("flambe_compat.migrate.migrations", lambda: patched)


def without_config(archive: Archive, folder: str) -> Archive:
    """`archive` at revision 1.3 with the child node at `folder` missing its config."""
    children = dict(archive.tree.children)
    children[folder] = children[folder]._replace(config=None)
    tree = archive.tree._replace(children=children)
    return dataclasses.replace(archive, tree=tree, revision="1.3")


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (
            lambda a: dataclasses.replace(a, revision="1.3"),
            "'keep_vars' is a dependency of '_flambe_directories'",
        ),
        (lambda a: without_config(a, "counter"), "cannot be written as revision 1.3"),
        (lambda a: dataclasses.replace(a, revision="1.4"), "left revision 1.4, not 1.3"),
    ],
    ids=["schema-refuses", "node-metadata-dropped", "wrong-revision"],
)
def test_a_broken_step_stops_the_chain(
    monkeypatch: pytest.MonkeyPatch,
    decoded: dict[str, Archive],
    broken: Callable[[Archive], Archive],
    message: str,
) -> None:
    """The 1.2 -> 1.3 step forgets `keep_vars`, drops a config, or mislabels its result."""
    calls: list[Archive] = []

    def next_step(archive: Archive) -> Archive:
        calls.append(archive)
        return STEPS["1.3->1.4"].function(archive)

    replaced(monkeypatch, {"1.2->1.3": broken, "1.3->1.4": next_step})
    archive = decoded["0.4.11-legacy/wrapper-dir"]
    assert archive.revision == "1.2"
    with pytest.raises(MigrationError) as caught:
        run(archive, LATEST, step_problems=step_problems)
    assert "flambe_compat.migrations.m1_2_to_1_3" in str(caught.value)
    assert message in str(caught.value)
    assert calls == []

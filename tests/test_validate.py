"""Validation: a `Report` with every problem of an archive, and the load path built on it."""

from __future__ import annotations

import collections
import gzip
import io
import os
import random
import shutil
import tarfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import dill
import pytest
import torch

from flambe_compat import LoadError, Report, load_state_from_file, validate
from flambe_compat.problems import Problem
from tests.corpus import CorpusArchive, archives, copy_of, expected_revision

ARCHIVES = list(archives())
NOISE = random.Random(0).randbytes(4096)


def problems_of(report: Report) -> list[tuple[str, str]]:
    """(file, rule) of each problem; schema rules shortened to their file name."""
    return [(p.path, p.rule.split("#")[0]) for p in report.problems]


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda a: a.id)
def test_corpus_archive_is_valid(archive: CorpusArchive) -> None:
    report = validate(archive.path, strict=True)
    assert report.problems == []
    assert report.valid
    assert report.source == os.fspath(archive.path)
    assert (report.container, report.layout) == (archive.container, archive.layout)
    assert (report.protocol, report.revision) == (1, expected_revision(archive))
    assert report.nodes == archive.directories


def test_report_rendering_and_json() -> None:
    path = next(a.path for a in ARCHIVES if a.id == "0.4.13-legacy/wrapper-tgz.tar.gz")
    report = validate(path)
    assert report.render() == (
        f"{path}: valid (protocol 1 revision 1.3, folder in tar.gz, 4 nodes)"
    )
    assert report.as_json() == {
        "source": str(path),
        "valid": True,
        "container": "tar.gz",
        "layout": "folder",
        "protocol": 1,
        "revision": "1.3",
        "nodes": ["", "counter", "model", "model.inner"],
        "problems": [],
    }
    report.raise_for_problems()


def test_three_problems_at_once(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-legacy/wrapper-dir", tmp_path)
    (folder / "model" / "source.py").unlink()
    (folder / "counter" / "protocol_version.txt").write_text("abc")
    inner = folder / "model" / "inner" / "state.pt"
    inner.write_bytes(inner.read_bytes()[:200])
    report = validate(folder)
    assert not report.valid
    assert (report.revision, report.nodes) == ("1.4", ["", "counter", "model", "model.inner"])
    assert sorted(problems_of(report)) == [
        ("counter/protocol_version.txt", "1.4.json"),
        ("model/inner/state.pt", "decode"),
        ("model/source.py", "1.4.json"),
    ]
    rendered = report.render()
    assert rendered.startswith(f"{folder}: invalid (3 problems)")
    for problem in report.problems:
        assert f"{folder}: {problem.path}: " in rendered

    with pytest.raises(LoadError) as raised:
        load_state_from_file(folder)
    message = str(raised.value)
    assert message.startswith(f"{folder}: invalid archive")
    for problem in report.problems:
        assert problem.render(str(folder)) in message


def tar_with_parent_member(tmp_path: Path) -> Path:
    """A tarball whose member would land outside the folder it is unpacked into."""
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = 2
        tar.addfile(member, io.BytesIO(b"hi"))
    return path


def write(name: str, content: bytes) -> Callable[[Path], Path]:
    """A maker of the file `name` holding `content`."""

    def make(tmp_path: Path) -> Path:
        (tmp_path / name).write_bytes(content)
        return tmp_path / name

    return make


BAD = {
    "nonexistent": (lambda tmp_path: tmp_path / "nothing.flambe", "container"),
    "empty file": (write("m.pkl", b""), "container"),
    "random bytes": (write("m.pkl", NOISE), "revision"),
    "gzip garbage": (write("m.tar.gz", gzip.compress(NOISE)), "container"),
    "truncated gzip": (write("m.tar.gz", b"\x1f\x8b\x08\x00"), "container"),
    "../ member": (tar_with_parent_member, "container"),
    "empty folder": (lambda tmp_path: tmp_path, "revision"),
}


@pytest.mark.parametrize(("make", "rule"), BAD.values(), ids=BAD.keys())
def test_never_raises_for_a_bad_archive(
    tmp_path: Path, make: Callable[[Path], Path], rule: str
) -> None:
    path = make(tmp_path)
    report = validate(path)
    assert not report.valid
    (problem,) = report.problems
    assert (problem.path, problem.rule) == ("", rule)
    assert problem.message
    assert report.render().startswith(f"{path}: invalid (1 problem)")
    with pytest.raises(LoadError):
        load_state_from_file(path)


STRICT = {
    "extra file": (
        lambda f: (f / "notes.txt").write_text("mine"),
        "notes.txt",
        "strict-extra-file",
    ),
    "extra child file": (
        lambda f: (f / "counter" / "scores.csv").write_text("1,2"),
        "counter/scores.csv",
        "strict-extra-file",
    ),
    "non-semver version": (
        lambda f: (f / "model" / "version.txt").write_text("Stack:2.0"),
        "model/version.txt",
        "strict-semver",
    ),
    "empty root config": (
        lambda f: (f / "config.yaml").write_text(""),
        "config.yaml",
        "strict-config",
    ),
}


@pytest.mark.parametrize(("change", "path", "rule"), STRICT.values(), ids=STRICT.keys())
def test_strict_flags_what_flambe_tolerated(
    tmp_path: Path, change: Callable[[Path], object], path: str, rule: str
) -> None:
    folder = copy_of("0.4.18-zip/wrapper-dir", tmp_path)
    change(folder)
    assert validate(folder).valid
    assert problems_of(validate(folder, strict=True)) == [(path, rule)]
    assert load_state_from_file(folder)["counter.count"] == 1
    with pytest.raises(LoadError, match=f"{path}: .*\\[{rule}\\]"):
        load_state_from_file(folder, strict=True)


def test_a_version_that_is_not_a_version(tmp_path: Path) -> None:
    folder = copy_of("0.4.11-legacy/mlp-dir", tmp_path)
    (folder / "version.txt").write_text("MLP:banana")
    (problem,) = validate(folder).problems
    assert (problem.path, problem.rule) == ("version.txt", "version")
    assert "'banana' is not a version" in problem.message


def test_a_key_in_the_parent_belonging_to_a_child(tmp_path: Path) -> None:
    folder = copy_of("0.4.11-legacy/wrapper-dir", tmp_path)
    state = OrderedDict([("counter.count", 3)])
    torch.save(state, folder / "state.pt", _use_new_zipfile_serialization=False)
    (problem,) = validate(folder).problems
    assert (problem.path, problem.rule) == ("state.pt", "key-owner")
    assert "'counter.count'" in problem.message


def test_a_listed_component_without_its_folder(tmp_path: Path) -> None:
    folder = copy_of("0.4.13-legacy/wrapper-dir", tmp_path)
    shutil.rmtree(folder / "counter")
    report = validate(folder)
    assert report.nodes == ["", "model", "model.inner"]
    (problem,) = report.problems
    assert (problem.path, problem.rule) == ("state.pt", "directories")
    assert "lists 'counter' but the archive has no folder 'counter'" in problem.message


def test_a_folder_that_is_not_listed(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-legacy/wrapper-dir", tmp_path)
    shutil.copytree(folder / "counter", folder / "model" / "spare")
    (problem,) = validate(folder).problems
    assert (problem.path, problem.rule) == ("model/spare", "directories")


def test_a_class_that_disagrees_with_state_metadata(tmp_path: Path) -> None:
    folder = copy_of("0.4.13-legacy/wrapper-dir", tmp_path)
    (folder / "counter" / "version.txt").write_text("Kounter:0.0.0")
    (problem,) = validate(folder).problems
    assert (problem.path, problem.rule) == ("counter/version.txt", "node-metadata")
    assert "'Kounter'" in problem.message
    assert "'Counter'" in problem.message


def test_a_global_outside_the_allow_list(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-legacy/wrapper-dir", tmp_path)
    stash = {"seen": collections.Counter("abca")}
    torch.save(stash, folder / "counter" / "stash.pkl", _use_new_zipfile_serialization=False)
    (problem,) = validate(folder).problems
    assert (problem.path, problem.rule) == ("counter/stash.pkl", "allow-list")
    assert "collections.Counter" in problem.message
    assert validate(folder, allow_globals=["collections.Counter"]).valid
    assert not validate(folder, allow_globals=["collections.defaultdict"]).valid

    with pytest.raises(LoadError, match=r"counter/stash.pkl: .*collections\.Counter"):
        load_state_from_file(folder)
    state = load_state_from_file(folder, allow_globals=["collections.Counter"])
    assert state._metadata["counter"]["_flambe_stash"] == stash


def touch(path: str) -> None:
    """What unpickling a `Marker` would run."""
    Path(path).touch()


class Marker:
    """Unpickles as a call to `touch`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, ...]:
        return touch, (self.path,)


def test_a_global_outside_the_allow_list_runs_nothing(tmp_path: Path) -> None:
    folder = copy_of("0.4.18-zip/counter-dir", tmp_path)
    marker = tmp_path / "marker"
    torch.save({"x": Marker(marker)}, folder / "stash.pkl")
    (problem,) = validate(folder).problems
    assert problem.rule == "allow-list"
    assert f"{__name__}.touch" in problem.message
    assert not marker.exists()


def test_a_pickle_only_archive_with_problems(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    state = OrderedDict(w=torch.ones(2))
    state._metadata = {"_flambe_directories": {"", "x"}, "keep_vars": False}  # type: ignore[attr-defined]
    path.write_bytes(dill.dumps(state, protocol=2))  # as flambe pickled
    report = validate(path)
    assert (report.layout, report.revision, report.nodes) == ("pickle", "1.4", ["", "x"])
    assert problems_of(report) == [("m.pkl", "pickle-1.json")]
    assert "'' is a required property" in report.problems[0].message


def test_problem_rendering() -> None:
    problem = Problem("model/state.pt", "decode", "cannot be decoded")
    assert problem.render("m") == "m: model/state.pt: cannot be decoded [decode]"
    assert Problem("", "container", "empty").render("m") == "m: empty [container]"


def test_a_set_saved_with_torch_defaults(tmp_path: Path) -> None:
    """Protocol 2 pickles of Python 3 name builtins the Python 2 way (`__builtin__.set`)."""
    folder = copy_of("0.4.11-legacy/counter-dir", tmp_path)
    state = OrderedDict(count=1, label="x", seen={"a", "b"})
    torch.save(state, folder / "state.pt", _use_new_zipfile_serialization=False)
    assert validate(folder).problems == []
    assert load_state_from_file(folder)["seen"] == {"a", "b"}

"""Oracle differential: object graphs saved by real flambe releases, read and rebuilt by us.

`fixtures/flambe-objects` (see its README) holds the graphs of
`tests/oracle_models/graph_models.py` saved four ways by flambe 0.4.3, 0.4.6, 0.4.11,
0.4.13 and 0.4.18 (legacy torch format; 0.4.18 also zip), with the state each release
saved and the results of probes (forward or `process()` calls on fixed inputs) on the
objects it built. Our `load_state_from_file` must return the saved state, and our
`load()` (the user classes imported unchanged through `flambe_compat.shim`) objects that
give the recorded results and whose `get_state()` is the saved state. The oracle-marked
test regenerates the fixtures with flambe and checks they are what is committed.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import flambe_compat
from flambe_compat import load, load_state_from_file, shim
from flambe_compat.registry import registry
from tests.corpus import describe
from tests.oracle import find_oracle

REPO = Path(__file__).resolve().parent.parent
OBJECTS = REPO / "fixtures" / "flambe-objects"
MODELS = Path(__file__).resolve().parent / "oracle_models"
FOLDER_MODES = ("dir", "tgz")

RUAMEL_SCALARS = ("ruamel.yaml.scalarfloat.ScalarFloat", "ruamel.yaml.anchor.Anchor")
"""What flambe pickled for a float registered attribute read from YAML (`GraphHolder.scale`)."""

CONTAINER_GRAPHS = ("tower", "nest", "tencoder", "transformer")
"""Graphs with Components held in `ModuleList`s: the keys flambe 0.4.5 - 0.4.11 saved wrong."""

NEVER_SAVED = {"holder": ("head.weight", "head.bias")}
"""What flambe before 0.4.12 did not save: a plain Module held by a non-Module Component."""

KNOWN_FAILURES = {
    ("0.4.3", "labelfield"): "0.4.3's LabelField.process returned a 1-element tensor, "
    "flambe_compat's a 0-d one (a checkpoint does not record the release: we follow 0.4.18)",
}
"""Differences of the ported built-ins, each strict: the test fails once it is fixed."""


@dataclass(frozen=True)
class ObjectArchive:
    path: Path
    release: str
    graph: str
    mode: str
    entry: dict[str, Any]
    recorded: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def release_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.release.split("."))

    @property
    def never_saved(self) -> tuple[str, ...]:
        return NEVER_SAVED.get(self.graph, ()) if self.release_tuple < (0, 4, 12) else ()

    def load_options(self) -> dict[str, Any]:
        return {"allow_globals": RUAMEL_SCALARS} if self.graph == "holder" else {}


def object_archives() -> Iterator[ObjectArchive]:
    for expected_file in sorted(OBJECTS.glob("*/expected.json")):
        expected = json.loads(expected_file.read_text())
        for name, entry in sorted(expected["archives"].items()):
            yield ObjectArchive(
                path=expected_file.parent / name,
                release=expected["flambe"],
                graph=entry["graph"],
                mode=entry["mode"],
                entry=entry,
                recorded=expected["graphs"][entry["graph"]],
            )


ARCHIVES = list(object_archives())


def graph_models() -> ModuleType:
    """`tests/oracle_models/graph_models.py`, written for flambe, imported through the shim."""
    if "graph_models" in sys.modules:
        return sys.modules["graph_models"]
    if str(MODELS) not in sys.path:
        sys.path.insert(0, str(MODELS))
    was_installed = shim.installed()
    shim.install()
    try:
        return importlib.import_module("graph_models")
    finally:
        if not was_installed:
            shim.uninstall()


def decode(encoded: dict[str, Any]) -> Any:
    """A probe argument or result as gen_objects.py encoded it."""
    if "tensor" in encoded:
        dtype = getattr(torch, encoded["dtype"])
        return torch.tensor(encoded["tensor"], dtype=dtype).reshape(encoded["shape"])
    if "sequence" in encoded:
        return [decode(item) for item in encoded["sequence"]]
    return encoded["value"]


def assert_same_result(actual: Any, expected: Any) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor)
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    elif isinstance(expected, list):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same_result(a, e)
    else:
        assert actual == expected


def _params(
    archives: list[ObjectArchive], known: dict[tuple[str, str], str] = KNOWN_FAILURES
) -> list[Any]:
    params = []
    for archive in archives:
        reason = known.get((archive.release, archive.graph))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(archive, id=archive.id, marks=marks))
    return params


def test_every_release_and_graph_is_there() -> None:
    """Counts per release: 9 graphs for 0.4.3 (no Transformer yet), 11 after; 4 saves each."""
    per_release: dict[str, set[str]] = {}
    for archive in ARCHIVES:
        per_release.setdefault(archive.path.parent.name, set()).add(archive.graph)
    assert {name: len(graphs) for name, graphs in per_release.items()} == {
        "0.4.3-legacy": 9,
        "0.4.6-legacy": 11,
        "0.4.11-legacy": 11,
        "0.4.13-legacy": 11,
        "0.4.18-legacy": 11,
        "0.4.18-zip": 11,
    }
    assert len(ARCHIVES) == 4 * (9 + 5 * 11)


@pytest.mark.parametrize("archive", ARCHIVES, ids=[a.id for a in ARCHIVES])
def test_state_reads_as_saved(archive: ObjectArchive) -> None:
    """Every key and value, every Component prefix, each node's class and version.

    flambe's own reader got exactly the container graphs of 0.4.6 and 0.4.11 folders wrong.
    """
    state = describe(load_state_from_file(archive.path, **archive.load_options()))
    saved = archive.recorded["saved"]
    assert state["values"] == saved["values"]
    if archive.mode not in FOLDER_MODES:
        assert state["keys"] == saved["keys"]
    directories = saved["metadata"]["_flambe_directories"]
    assert state["metadata"]["_flambe_directories"] == directories
    for prefix in directories:
        ours, theirs = state["metadata"][prefix], saved["metadata"][prefix]
        for key in ("_flambe_class", "_flambe_version"):
            assert ours[key] == theirs[key]
        # a folder holds an empty config.yaml where the State had no config
        assert ours.get("_flambe_config", "") == theirs.get("_flambe_config", "")
    flambe_misread = (
        archive.release in ("0.4.6", "0.4.11")
        and archive.mode in FOLDER_MODES
        and archive.graph in CONTAINER_GRAPHS
    )
    assert (archive.entry["flambe_read"] != "same") == flambe_misread


@pytest.mark.parametrize("archive", _params([a for a in ARCHIVES if not a.never_saved]))
def test_object_gives_the_recorded_results(archive: ObjectArchive) -> None:
    """`load()` rebuilds the graph: same class, same results of every probe.

    Not for the GraphHolders of releases before 0.4.12: they did not save `GraphHolder.head`.
    """
    graph_models()
    obj = load(archive.path, **archive.load_options())
    assert type(obj).__name__ == archive.recorded["class"]
    if isinstance(obj, torch.nn.Module):
        obj.eval()
    with torch.no_grad():
        for probe in archive.recorded["probes"]:
            method: Any = obj
            for part in probe["method"].split("."):
                method = getattr(method, part)
            assert_same_result(method(*decode(probe["args"])), decode(probe["result"]))


@pytest.mark.parametrize("archive", _params(ARCHIVES, {}))
def test_object_state_is_the_saved_state(archive: ObjectArchive) -> None:
    """`get_state()` of the rebuilt object: the saved keys, values and Components.

    Plus, for the GraphHolders of releases before 0.4.12, the fresh `head` they never saved.
    """
    graph_models()
    state = describe(load(archive.path, **archive.load_options()).get_state())
    saved = archive.recorded["saved"]
    unsaved = {key for key in state["values"] if key not in saved["values"]}
    assert sorted(unsaved) == sorted(archive.never_saved)
    assert {k: v for k, v in state["values"].items() if k not in unsaved} == saved["values"]
    if archive.release_tuple >= (0, 4, 5):  # 0.4.3 recorded no Component held in a container
        assert state["metadata"]["_flambe_directories"] == saved["metadata"]["_flambe_directories"]
    if unsaved:  # flambe's own load() gave other results too
        assert archive.entry["flambe_load"] == "different results"


def test_flambe_load_lost_what_we_load() -> None:
    """What the oracle recorded of flambe's own `load()`, where ours gives the saved results."""
    lost = {a.id: a.entry["flambe_load"] for a in ARCHIVES if a.entry["flambe_load"] != "same"}
    folders = ("dir", "tgz.tar.gz")
    # 0.4.5 - 0.4.11: the weights of Components in containers silently skipped
    skipped = {
        f"{release}-legacy/{graph}-{mode}"
        for release in ("0.4.6", "0.4.11")
        for graph in ("tencoder", "tower", "transformer")
        for mode in folders
    }
    # no node metadata for Components in containers (0.4.3), or for a Block two containers
    # deep under its wrong folder name (0.4.6, 0.4.11)
    failed = {f"0.4.3-legacy/tower-{mode}" for mode in folders} | {
        f"{release}-legacy/nest-{mode}"
        for release in ("0.4.3", "0.4.6", "0.4.11")
        for mode in folders
    }
    # the plain Module of a non-Module Component never put back (every release and save)
    holder = {a.id for a in ARCHIVES if a.graph == "holder"}
    assert lost.keys() == skipped | failed | holder
    assert {lost[i] for i in skipped | holder} == {"different results"}
    assert {lost[i] for i in failed} == {"KeyError: '_flambe_version'"}


def test_graph_models_register_through_the_shim() -> None:
    """The module written for flambe defines our Components under flambe's user tags."""
    models = graph_models()
    assert issubclass(models.GraphTower, flambe_compat.Component)
    assert issubclass(models.GraphHolder, flambe_compat.Component)
    assert not issubclass(models.GraphHolder, torch.nn.Module)
    assert registry.resolve("!graph_models.GraphTower").constructor is models.GraphTower
    assert not shim.installed()


def assert_same_json(fresh: Any, committed: Any, where: str = "") -> None:
    """Equal JSON documents, floats within float32 rounding: a regenerated forward pass may
    sum in another order (CPU kernels pick their blocking at run time)."""
    if isinstance(committed, float) and isinstance(fresh, float):
        assert math.isclose(fresh, committed, rel_tol=1e-5, abs_tol=1e-6), where
    elif isinstance(committed, dict) and isinstance(fresh, dict):
        assert fresh.keys() == committed.keys(), where
        for key in committed:
            assert_same_json(fresh[key], committed[key], f"{where}/{key}")
    elif isinstance(committed, list) and isinstance(fresh, list):
        assert len(fresh) == len(committed), where
        for index, (new, old) in enumerate(zip(fresh, committed, strict=True)):
            assert_same_json(new, old, f"{where}/{index}")
    else:
        assert fresh == committed, where


@pytest.mark.oracle
def test_fixtures_are_what_flambe_writes(tmp_path: Path) -> None:
    """Regenerating with flambe 0.4.11 and 0.4.18 gives the committed graphs and states."""
    oracle = find_oracle()
    if oracle is None:
        pytest.skip("the flambe oracle is not installed")
    versions = Path(os.environ.get("FLAMBE_VERSIONS", "/root/.flambe-oracle/versions"))
    for release, path_first, torch_format in [
        ("0.4.11", [str(versions / "0.4.11")], "legacy"),
        ("0.4.18", [], "zip"),
    ]:
        out = tmp_path / f"{release}-{torch_format}"
        options = ["--expect", release, "--torch-format", torch_format]
        env = {
            **os.environ,
            "PYTHONHASHSEED": "0",  # as make_fixtures.sh: fields build vocabularies from sets
            "PYTHONPATH": os.pathsep.join([*path_first, str(oracle.folder), str(MODELS)]),
        }
        env.pop("PYTHONHOME", None)
        subprocess.run(
            [str(oracle.python), str(MODELS / "gen_objects.py"), str(out), *options],
            env=env,
            check=True,
            capture_output=True,
            timeout=600,
        )
        fresh = json.loads((out / "expected.json").read_text())
        committed = json.loads((OBJECTS / out.name / "expected.json").read_text())
        assert_same_json(fresh["graphs"], committed["graphs"])
        assert {k: v["flambe_read"] for k, v in fresh["archives"].items()} == {
            k: v["flambe_read"] for k, v in committed["archives"].items()
        }

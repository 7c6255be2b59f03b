"""Differential test of the built-ins against real flambe (0.4.18 and 0.4.3).

One oracle subprocess per release runs every case of tests/builtins_cases.py with flambe's
classes and saves each object's `get_state()` and the outputs of its calls. Here each case
is built with our classes from the same description, its own state names are compared with
flambe's, flambe's state is loaded into it (strictly: no missing or unexpected key), and its
outputs must equal flambe's. Cases with `setup` also compare the state our `setup` learns.
Skipped when the oracle is not installed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

import flambe_compat.builtins  # noqa: F401  (registers the classes)
from flambe_compat.state import State
from tests.builtins_cases import CASES, run_case, signatures
from tests.oracle import REPO, find_oracle

ORACLE = find_oracle()
VERSIONS_DIR = Path(os.environ.get("FLAMBE_ORACLE_VERSIONS", "/root/.flambe-oracle/versions"))
pytestmark = [
    pytest.mark.oracle,
    pytest.mark.filterwarnings("ignore:PooledRNNEncoder is deprecated:DeprecationWarning"),
    pytest.mark.skipif(ORACLE is None, reason="the flambe oracle is not installed"),
]


def _flambe_results(version: str, folder: Path) -> dict[str, Any]:
    assert ORACLE is not None
    paths = [str(ORACLE.folder), str(REPO)]
    if version != "0.4.18":
        release = VERSIONS_DIR / version
        if not (release / "flambe").is_dir():
            pytest.skip(f"flambe {version} is not unpacked in {VERSIONS_DIR}")
        paths.insert(0, str(release))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
    env["PYTHONPATH"] = os.pathsep.join(paths)
    out = folder / f"flambe-{version}.pt"
    script = REPO / "tests" / "builtins_cases.py"
    done = subprocess.run(
        [str(ORACLE.python), "-W", "ignore", str(script), version, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, Any] = torch.load(out, weights_only=True)
    return results


@pytest.fixture(scope="module")
def flambe_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """flambe's results by release, each release run once, when a test first asks.

    (A module fixture parametrized per test would be set up again for every case: pytest
    keys it by the index of the parameter set, not by the release.)
    """

    class Runs(dict[str, dict[str, Any]]):
        def __missing__(self, version: str) -> dict[str, Any]:
            self[version] = _flambe_results(version, tmp_path_factory.mktemp(f"flambe-{version}"))
            return self[version]

    return Runs()


def assert_same(ours: Any, theirs: Any, where: str) -> None:
    """Equal structures; tensors equal in dtype and shape and close in value."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor), f"{where}: {type(ours).__name__}, not a tensor"
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, where
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4, equal_nan=True), where
    elif isinstance(theirs, tuple | list):
        assert isinstance(ours, tuple | list) and len(ours) == len(theirs), where
        assert type(ours) is type(theirs), where
        for i, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(mine, other, f"{where}[{i}]")
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), where
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    else:
        assert ours == theirs, where


def _plain_state(state: dict[str, Any]) -> dict[str, Any]:
    """The state's entries in key order (flambe kept registered attributes in a set)."""
    return {key: state[key] for key in sorted(state) if not key.startswith("_")}


@pytest.mark.parametrize("version", sorted(CASES))
def test_every_case_ran_under_flambe(flambe_runs: dict[str, dict[str, Any]], version: str) -> None:
    results = flambe_runs[version]
    errors = {name: result["error"] for name, result in results.items() if "error" in result}
    assert not errors
    assert sorted(results) == sorted(case["name"] for case in CASES[version])


@pytest.mark.parametrize(
    ("version", "case"),
    [(version, case) for version, cases in CASES.items() for case in cases],
    ids=[f"{version}-{case['name']}" for version, cases in CASES.items() for case in cases],
)
def test_same_state_same_outputs(
    flambe_runs: dict[str, dict[str, Any]], version: str, case: dict[str, Any]
) -> None:
    result = flambe_runs[version][case["name"]]
    theirs = _plain_state(result["state"])

    def load_flambe_state(obj: Any) -> None:
        mine = _plain_state(obj.get_state())
        if case.get("same_keys", True):
            # same names; and same seed, same draws (or same setup data): same values
            assert list(mine) == list(theirs)
            assert_same(mine, theirs, "state before loading")
        obj.load_state(State(theirs), strict=True)

    obj, outputs = run_case(case, "flambe_compat.builtins", load_flambe_state)
    assert len(outputs) == len(result["outputs"])
    for i, (mine, other) in enumerate(zip(outputs, result["outputs"], strict=True)):
        assert_same(mine, other, f"call {i}")
    renamed = _plain_state({_as_0_4_18(key): value for key, value in theirs.items()})
    assert_same(_plain_state(obj.get_state()), renamed, "state after load")


def _as_0_4_18(key: str) -> str:
    """0.4.3's Embeddings (an nn.Embedding) kept its table as `weight`."""
    if key in ("weight", "embedding.weight") or key.endswith(".embedding.weight"):
        return key[: -len("weight")] + "token_embedding.weight"
    return key


NOT_PORTED = {
    "nlp.classification.NewsGroupDataset",
    "nlp.classification.SSTDataset",
    "nlp.classification.TRECDataset",
    "nlp.language_modeling.CorpusSampler",
    "nlp.language_modeling.Enwiki8",
    "nlp.language_modeling.PTBDataset",
    "nlp.language_modeling.Wiki103",
    "vision.classification.MNISTDataset",
}
OLDER_RELEASES_ONLY = {"tokenizer.BPETokenizer"}


def test_constructor_signatures_are_flambe_0_4_18s() -> None:
    """Same argument names, order and defaults: configs record every default."""
    assert ORACLE is not None
    theirs = ORACLE.run(REPO / "tests" / "builtins_cases.py", "signatures")
    ours = signatures("flambe_compat.builtins")
    assert set(theirs) - set(ours) == NOT_PORTED
    assert set(ours) - set(theirs) == OLDER_RELEASES_ONLY
    for name in set(theirs) & set(ours):
        assert ours[name] == theirs[name], name

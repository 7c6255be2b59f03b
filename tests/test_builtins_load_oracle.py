"""Built-ins saved by every flambe release (0.4.3 to 0.4.18), rebuilt by our `load()`.

Each release compiles the configs of tests/builtins_release_graphs.py (written in its own
argument names: 0.4.3's `pad_index`, nn.Embedding-style `Embeddings`...) and saves them
with its own `save`; `flambe_compat.load` must return objects whose outputs (forward or
`process`) equal the original's. Then our `save(..., protocol=1)` of those objects, loaded by
flambe 0.4.18's own `load`, must give flambe's classes with the same outputs again.
Skipped when the oracle is not installed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

import flambe_compat
from tests.builtins_release_graphs import GRAPHS, call, graphs
from tests.oracle import REPO, find_oracle
from tests.test_builtins_oracle import VERSIONS_DIR, assert_same

ORACLE = find_oracle()
RELEASES = ["0.4.3", "0.4.6", "0.4.11", "0.4.13", "0.4.18"]
pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(ORACLE is None, reason="the flambe oracle is not installed"),
    pytest.mark.filterwarnings("ignore:PooledRNNEncoder is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """By release, a folder of its `<graph>` archives and `outputs.pt`, each release run
    once, when a test first asks (see `test_builtins_oracle.flambe_runs` for why)."""

    class Saved(dict[str, Path]):
        def __missing__(self, version: str) -> Path:
            assert ORACLE is not None
            paths = [str(ORACLE.folder), str(REPO)]
            if version != "0.4.18":
                if not (VERSIONS_DIR / version / "flambe").is_dir():
                    pytest.skip(f"flambe {version} is not unpacked in {VERSIONS_DIR}")
                paths.insert(0, str(VERSIONS_DIR / version))
            folder = tmp_path_factory.mktemp(f"saved-{version}")
            _run_graphs_script(paths, version, str(folder))
            self[version] = folder
            return folder

    return Saved()


def _run_graphs_script(paths: list[str], *args: str) -> None:
    """Run tests/builtins_release_graphs.py under the oracle with `paths` importable."""
    assert ORACLE is not None
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
    env["PYTHONPATH"] = os.pathsep.join(paths)
    script = REPO / "tests" / "builtins_release_graphs.py"
    done = subprocess.run(
        [str(ORACLE.python), "-W", "ignore", str(script), *args],
        cwd=args[-1],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _params() -> list[Any]:
    params = []
    for version in RELEASES:
        for name in graphs(version):
            params.append(pytest.param(version, name, id=f"{version}-{name}"))
    return params


@pytest.mark.parametrize(("version", "name"), _params())
def test_load_rebuilds_what_flambe_saved(saved: dict[str, Path], version: str, name: str) -> None:
    folder = saved[version]
    expected = torch.load(folder / "outputs.pt", weights_only=True)[name]
    obj = flambe_compat.load(str(folder / name))
    assert type(obj).__module__.startswith("flambe_compat.builtins.")
    _, _, inputs = graphs(version)[name]
    assert_same(call(obj, inputs), expected, f"{version} {name}")


def test_flambe_loads_what_we_save(saved: dict[str, Path], tmp_path: Path) -> None:
    assert ORACLE is not None
    folder = saved["0.4.18"]
    expected = torch.load(folder / "outputs.pt", weights_only=True)
    for name in GRAPHS:
        obj = flambe_compat.load(str(folder / name))
        flambe_compat.save(obj, str(tmp_path / name), protocol=1)
    _run_graphs_script([str(ORACLE.folder), str(REPO)], "load", str(tmp_path))
    rebuilt = torch.load(tmp_path / "outputs.pt", weights_only=True)
    assert sorted(rebuilt) == sorted(GRAPHS)
    for name, result in rebuilt.items():
        assert result["module"].startswith("flambe."), name
        assert_same(result["outputs"], expected[name], name)

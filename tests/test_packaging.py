"""The wheel works outside the source tree: it imports, reads archives, ships its data.

The wheel is built with pip (build isolation, so hatchling comes from the registry or
pip's cache) and installed with `--no-deps` into a fresh virtualenv whose dependencies
come from this interpreter's site-packages through a `.pth` file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.corpus import archives

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ARCHIVE = next(a for a in archives() if a.id == "0.4.18-legacy/wrapper-tgz.tar.gz")

PROBE = """
import json, sys
from pathlib import Path
import flambe_compat
state = flambe_compat.load_state_from_file(sys.argv[1])
package = Path(flambe_compat.__file__).parent
print(json.dumps({
    "file": flambe_compat.__file__,
    "keys": sorted(state),
    "data": {
        folder: sorted(str(p.relative_to(package)) for p in (package / folder).rglob("*"))
        for folder in ("schemas", "migrations") if (package / folder).is_dir()
    },
}))
"""


def run(*command: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed and this interpreter's dependencies."""
    root = tmp_path_factory.mktemp("packaging")
    dist, venv = root / "dist", root / "venv"
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "-q")
    run(*pip, "wheel", "--no-deps", "-w", dist, REPO, cwd=root)
    (wheel,) = dist.glob("flambe_compat-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel)
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(purelib.strip()) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_installed_wheel_reads_an_archive_and_ships_its_data(venv: Path, tmp_path: Path) -> None:
    out = run(venv / "bin" / "python", "-c", PROBE, ARCHIVE.path, cwd=tmp_path)
    probe = json.loads(out)
    assert Path(probe["file"]).is_relative_to(venv)
    assert probe["keys"] == sorted(ARCHIVE.expected_reading()["keys"])
    assert set(probe["data"]) == {"schemas", "migrations"}
    schemas = {str(p.relative_to(REPO)) for p in (REPO / "schemas").rglob("*.json")}
    assert schemas <= set(probe["data"]["schemas"])
    migrations = {str(p.relative_to(REPO)) for p in (REPO / "migrations").rglob("*.py")}
    assert migrations <= set(probe["data"]["migrations"])


def test_console_script_runs(venv: Path, tmp_path: Path) -> None:
    if not (REPO / "flambe_compat" / "cli.py").is_file():
        pytest.skip("flambe_compat/cli.py does not exist yet")
    assert run(venv / "bin" / "flambe-compat", "--help", cwd=tmp_path).strip()

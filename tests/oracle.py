"""The flambe oracle: real flambe 0.4.18 on current torch (see ../shared/flambe-oracle).

Tests and benchmarks run scripts under it in a subprocess to compare with the original
implementation. It is optional: `find_oracle()` returns None when it is not installed.
`FLAMBE_ORACLE_ENV` names its virtualenv (default `/root/.flambe-oracle/env`, then
`<repo>/.flambe-oracle/env`), `FLAMBE_ORACLE_DIR` the folder of its stubs and sample models
(default `<repo>/../shared/flambe-oracle`).

>>> oracle = find_oracle()
>>> oracle is None or oracle.python.is_file()
True
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENV_VARIABLE = "FLAMBE_ORACLE_ENV"
DIR_VARIABLE = "FLAMBE_ORACLE_DIR"
DEFAULT_ENVS = (Path("/root/.flambe-oracle/env"), REPO / ".flambe-oracle" / "env")
DEFAULT_DIR = REPO.parent / "shared" / "flambe-oracle"
READ_SCRIPT = Path(__file__).resolve().parent / "oracle_read.py"


class OracleError(RuntimeError):
    """A script run under the oracle failed or printed no JSON."""


@dataclass(frozen=True)
class Oracle:
    """The oracle's interpreter (flambe 0.4.18 installed) and its folder of stubs."""

    python: Path
    folder: Path

    def run(self, script: Path, *args: str, cwd: Path | None = None, timeout: float = 900) -> Any:
        """Run `script` under flambe 0.4.18 and return the JSON document it prints.

        The oracle folder (stubs, `sample_models`) and this repository (`tests.corpus`)
        are importable by the script.
        """
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        env["PYTHONPATH"] = os.pathsep.join([str(self.folder), str(REPO)])
        done = subprocess.run(
            [str(self.python), str(script), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise OracleError(f"{script.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError as error:
            message = f"{script.name} printed no JSON ({error}):\n{done.stdout[-500:]}"
            raise OracleError(message) from None

    def read(self, paths: list[Path], objects: bool = False, cwd: Path | None = None) -> Any:
        """flambe's reading of each archive: `{path: describe(...) or {"error": ...}}`.

        With `objects`, flambe's `load` rebuilds each object: `{"class": ..., "state": ...}`.
        """
        flags = ["--objects"] if objects else []
        return self.run(READ_SCRIPT, *flags, *map(str, paths), cwd=cwd)


def find_oracle() -> Oracle | None:
    """The installed oracle, or None."""
    configured = os.environ.get(ENV_VARIABLE)
    envs = (Path(configured),) if configured else DEFAULT_ENVS
    folder = Path(os.environ.get(DIR_VARIABLE, DEFAULT_DIR))
    if not (folder / "sitecustomize.py").is_file():
        return None
    for env in envs:
        python = env / "bin" / "python"
        if python.is_file():
            return Oracle(python, folder)
    return None

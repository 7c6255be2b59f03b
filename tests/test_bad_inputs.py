"""Every bad input (DESIGN.md section 6, built by `tests.badinputs`) meets the contract.

`load_state_from_file` raises `LoadError` and nothing else, its message names the file
and the problem; it never hangs, writes nothing outside a temporary folder and runs no
code from the archive. `validate`, when the package has it, reports the archive invalid
without raising. Risky cases load in a subprocess under a timeout and a memory limit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import flambe_compat
from flambe_compat import LoadError, State, load_state_from_file
from flambe_compat.unpickle import Trust, allowed_globals, unpickle
from tests.badinputs import (
    CANARY,
    MALICIOUS,
    MARKER,
    POISON,
    BadInput,
    a_pickle,
    bad_configs,
    bad_inputs,
    deadline,
    op_global,
    op_text,
    poison_pickle,
    remove_tree,
)
from tests.corpus import CORPUS

CASES = bad_inputs()
CONFIG_CASES = bad_configs()
ADDRESS_SPACE_LIMIT = 6 << 30
"""Isolated loads run with this much address space: a bomb fails instead of swapping."""
MAX_RSS = 1 << 30
"""Peak memory an isolated load may reach (importing torch takes about 300 MiB)."""

CHILD = """
import json, resource, sys
import flambe_compat
path, out = sys.argv[1], {}
try:
    flambe_compat.load_state_from_file(path)
    out["error"] = None
except BaseException as error:
    kind = "LoadError" if isinstance(error, flambe_compat.LoadError) else type(error).__name__
    out["error"] = [kind, str(error)]
if hasattr(flambe_compat, "validate"):
    report = flambe_compat.validate(path)
    out["report"] = [report.valid, [f"{report.source}: {p}" for p in report.problems]]
out["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


@dataclass
class Outcome:
    """What loading (and validating) one archive did."""

    error: tuple[str, str] | None
    """`("LoadError", message)`, or another exception's type name and message."""
    report: tuple[bool, list[str]] | None = None
    max_rss: int | None = None


def load_in_process(path: Path, timeout: float) -> Outcome:
    with deadline(timeout):
        try:
            load_state_from_file(path)
            outcome = Outcome(None)
        except LoadError as error:
            outcome = Outcome(("LoadError", str(error)))
        except Exception as error:
            outcome = Outcome((type(error).__name__, str(error)))
        if hasattr(flambe_compat, "validate"):
            report = flambe_compat.validate(path)
            outcome.report = (report.valid, [f"{report.source}: {p}" for p in report.problems])
    return outcome


def load_isolated(path: Path, case: BadInput, private_tmp: Path) -> Outcome:
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))

    env = {**os.environ, "TMPDIR": str(private_tmp), **dict(case.env)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)],
            env=env,
            cwd=private_tmp,
            capture_output=True,
            text=True,
            timeout=case.timeout,
            preexec_fn=limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hang: loading took more than {case.timeout} s")
    assert done.returncode == 0, f"the loading process died ({done.returncode}): {done.stderr}"
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    report = out.get("report")
    return Outcome(
        tuple(out["error"]) if out["error"] else None,  # type: ignore[arg-type]
        (report[0], report[1]) if report else None,
        out["max_rss"],
    )


def poisoned() -> list[str]:
    """Allowed globals a pickle managed to modify (and cures them)."""
    found = []
    candidates = {
        "flambe_compat.State": State,
        "torch.storage.UntypedStorage": torch.UntypedStorage,
        **allowed_globals(),
    }
    for name, value in candidates.items():
        if POISON in getattr(value, "__dict__", {}):
            found.append(name)
            delattr(value, POISON)
    cache = torch.serialization._get_layout.cache  # type: ignore[attr-defined]
    if cache.get("torch.strided", torch.strided) is not torch.strided:
        found.append("torch.serialization._get_layout.cache")
        cache.clear()
    return found


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A folder for the case, and one to serve as the system temp folder; both removed."""
    here, private_tmp = tmp_path / "case", tmp_path / "tmp"
    here.mkdir()
    private_tmp.mkdir()
    yield here, private_tmp
    remove_tree(here)
    remove_tree(private_tmp)


def _param(case: BadInput) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_bad_input_raises_load_error(
    case: BadInput, folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, private_tmp = folders
    try:
        path = case.build(here)
    except PermissionError as error:
        pytest.skip(f"cannot build this input here: {error}")
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    before = {folder: sorted(os.listdir(folder)) for folder in (here, private_tmp)}

    if case.isolated:
        outcome = load_isolated(path, case, private_tmp)
    else:
        outcome = load_in_process(path, case.timeout)

    assert not (here / MARKER).exists(), "code from the archive ran"
    assert poisoned() == [], "a pickle modified allowed globals"
    assert {folder: sorted(os.listdir(folder)) for folder in before} == before
    assert outcome.error is not None, "the bad input loaded without error"
    kind, message = outcome.error
    assert kind == "LoadError", f"{kind}: {message}"
    for fragment in case.fragments:
        assert fragment in message
    if outcome.max_rss is not None:  # isolated: bounded by checks, not by the memory limit
        assert outcome.max_rss < MAX_RSS, f"peak memory {outcome.max_rss >> 20} MiB"
        assert "MemoryError" not in message, "only the memory limit stopped this load"
    if outcome.report is not None:
        valid, problems = outcome.report
        assert valid is False
        for fragment in case.fragments:
            assert any(fragment in problem for problem in problems), problems


@pytest.mark.parametrize("payload", sorted(MALICIOUS))
def test_malicious_pickle_runs_code_when_unpickled_plainly(payload: str, tmp_path: Path) -> None:
    """The payloads are real: plain `pickle.loads` creates the marker they aim at."""
    marker = tmp_path / MARKER
    pickle.loads(MALICIOUS[payload].build(marker))
    assert marker.exists()


def test_poison_pickle_modifies_globals_when_unpickled_plainly() -> None:
    """The poison payload is real: unpickled as flambe did, it modifies allowed globals."""
    good = (CORPUS / "0.4.18-zip" / "wrapper-pkl.pkl").read_bytes()
    unpickle(io.BytesIO(poison_pickle(good)), Trust(trusted=True))
    assert set(poisoned()) == {
        "flambe_compat.State",
        "torch.storage.UntypedStorage",
        "torch._utils._rebuild_tensor_v2",
        "torch.serialization._get_layout.cache",
    }


def test_torchscript_state_runs_code_when_loaded_by_torch(tmp_path: Path) -> None:
    """The TorchScript case is real: `torch.load` hands it to `torch.jit.load`, which runs it."""
    case = next(case for case in CASES if case.id == "state-torchscript")
    root = case.build(tmp_path)
    with pytest.warns(UserWarning, match="TorchScript"):
        torch.load(root / case.fragments[0], weights_only=False)
    assert (tmp_path / MARKER).exists()


def _attributes(value: Any) -> dict[str, Any]:
    """What a pickle could change on `value`: its attributes, defaults, partial arguments."""
    found = dict(getattr(value, "__dict__", {}))
    for name in ("__defaults__", "__kwdefaults__", "func", "args", "keywords"):
        if hasattr(value, name):
            found[name] = getattr(value, name)
    return found


@pytest.mark.parametrize("name", sorted(allowed_globals()))
def test_no_pickle_modifies_an_allowed_global(name: str) -> None:
    """BUILD applied to an allowed global itself, not an instance, changes nothing on it."""
    module, _, attribute = name.rpartition(".")
    value = allowed_globals()[name]
    before = _attributes(value)
    flag = b"}" + op_text(POISON) + b"\x88s"
    for state in (flag, b"N" + flag + b"\x86", b"(" + op_global("builtins", "set") + b")NNt"):
        with contextlib.suppress(Exception):
            unpickle(io.BytesIO(a_pickle(op_global(module, attribute) + state + b"b0}")), Trust())
        after = _attributes(value)
        assert after.keys() == before.keys()
        assert all(after[key] is before[key] for key in before)


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[case.id for case in CONFIG_CASES])
def test_bad_config_raises_load_error_naming_the_node(
    case: BadInput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`load()` refuses the object: nothing outside the registry is built or imported."""
    path = case.build(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the canary extension module is importable
    with deadline(case.timeout), pytest.raises(LoadError) as raised:
        flambe_compat.load(path)
    for fragment in case.fragments:
        assert fragment in str(raised.value)
    assert str(path) in str(raised.value)
    assert not (tmp_path / MARKER).exists(), "the config ran code or imported its extension"
    assert CANARY not in sys.modules
    flambe_compat.validate(path)  # never raises

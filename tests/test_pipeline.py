"""The pipeline: one pass per operation, typed stages, torch only where tensors are decoded."""

from __future__ import annotations

import builtins
import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flambe_compat import load_state_from_file, upgrade, validate
from flambe_compat.pipeline import decode, inspected
from flambe_compat.unpickle import Trust
from flambe_compat.write import write_protocol1, write_protocol2
from tests.corpus import CORPUS
from tests.oracle import REPO
from tests.test_write import make_state
from tests.test_ziprecords import record_reads

SMALL = CORPUS / "0.4.18-zip/wrapper-dir"

CHILD = """
import json, sys
from flambe_compat.cli import main
codes = [main(["validate", sys.argv[1]]), main(["inspect", sys.argv[1]])]
imported = sorted(m for m in ("torch", "dill") if m in sys.modules)
print(json.dumps({"codes": codes, "imported": imported}))
"""


@pytest.mark.parametrize(
    "archive",
    ["0.4.18-zip/wrapper-dir", "0.4.3-legacy/wrapper-tgz.tar.gz", "0.4.18-zip/mlp-pkl.pkl"],
)
def test_validate_and_inspect_never_import_torch(archive: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(CORPUS / archive)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome == {"codes": [0, 0], "imported": []}


def count_opens(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every file opened from now on, by resolved path, counted."""
    opens: Counter[str] = Counter()
    real_open = io.open

    def counting(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, Path)):
            opens[str(Path(file).resolve())] += 1
        return real_open(file, *args, **kwargs)

    real_os_open = os.open

    def counting_descriptor(file: Any, *args: Any, **kwargs: Any) -> int:
        if isinstance(file, (str, Path)):
            opens[str(Path(file).resolve())] += 1
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting)
    monkeypatch.setattr(builtins, "open", counting)
    monkeypatch.setattr(os, "open", counting_descriptor)
    return opens


@pytest.mark.parametrize("protocol", [1, 2])
def test_a_load_reads_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: int
) -> None:
    writer = write_protocol1 if protocol == 1 else write_protocol2
    root = writer(make_state(), tmp_path / "m").resolve()
    files = sorted(str(p) for p in root.rglob("*") if p.is_file())
    opens = count_opens(monkeypatch)
    load_state_from_file(root)
    opens = Counter({path: n for path, n in opens.items() if path.startswith(f"{root}/")})
    assert set(opens) <= set(files)
    payloads = {path for path in files if path.endswith((".pt", ".pkl"))}
    allowed = dict.fromkeys(files, 1)
    # detection peeks at the root's protocol_version.txt before describing reads it
    allowed[str(root / "protocol_version.txt")] = 2
    # sniffed (its first 512 bytes), then read whole when described and decoded from memory
    allowed |= dict.fromkeys(payloads, 2)
    allowed[str(root / "state.pt")] = 3  # detection reads its pickle's opcodes for _metadata
    if protocol == 2:
        # memory-mapped, not read whole: sniffed, its pickle record's CRC checked, the zip
        # checked as torch reads it, mapped, and hashed (tensor bytes read by the hash only)
        allowed |= dict.fromkeys(payloads, 5)
    assert {path: n for path, n in opens.items() if n > allowed[path]} == {}
    assert all(opens[path] >= 1 for path in payloads)


def test_a_dry_run_reads_no_tensor_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_protocol1(make_state(), tmp_path / "m")
    records = record_reads(monkeypatch)

    def no_torch_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dry run decoded a payload")

    monkeypatch.setattr("torch.load", no_torch_load)
    monkeypatch.setattr("flambe_compat.torchzip.load_zip", no_torch_load)
    result = upgrade(source, dry_run=True)
    assert result.steps == ["1.4->2.0"]
    assert records and {name.rpartition("/")[2] for name in records} == {"data.pkl"}


def test_the_stages_hand_over_typed_records() -> None:
    with inspected(SMALL, for_decoding=True) as inspection:
        assert inspection.report.valid and inspection.description is not None
        assert [node.relative for node in inspection.description.nodes] == [
            "",
            "counter",
            "model",
            "model/inner",
        ]
        archive = decode(inspection, Trust())
    assert (archive.revision, archive.layout) == ("1.4", "folder")
    assert sorted(archive.state()._metadata["_flambe_directories"]) == validate(SMALL).nodes

"""Every corpus archive, upgraded to 2.0 and then down to 1.4, loads in real flambe 0.4.18.

flambe's `load_state_from_file` (through the oracle, tests/oracle.py, in one subprocess for
all archives) returns the keys, values and node metadata that were saved. Skipped when the
oracle is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flambe_compat import upgrade
from tests.corpus import archives
from tests.oracle import find_oracle

ORACLE = find_oracle()
pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(ORACLE is None, reason="the flambe oracle is not installed"),
]

ARCHIVES = {archive.id: archive for archive in archives()}


def round_trip(source: Path, folder: Path, name: str) -> Path:
    """`source` upgraded to 2.0 under `folder/2.0`, that downgraded to 1.4 under `folder/1.4`."""
    latest = upgrade(source, folder / "2.0" / name).destination
    assert latest is not None
    readable = upgrade(latest, folder / "1.4" / name, to="1.4").destination
    assert readable is not None
    return readable


@pytest.fixture(scope="module")
def flambe_readings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """flambe 0.4.18's reading of each corpus archive's round trip, by archive id."""
    assert ORACLE is not None
    folder = tmp_path_factory.mktemp("oracle-upgrade")
    readable = {name: round_trip(a.path, folder, name) for name, a in ARCHIVES.items()}
    readings = ORACLE.read(list(readable.values()), cwd=folder)
    return {name: readings[str(path)] for name, path in readable.items()}


def node_metadata(reading: dict[str, Any]) -> dict[str, Any]:
    """The `_flambe_*` entries per prefix (flambe's folder reader files some under `prefix.`)."""
    found: dict[str, Any] = {}
    for key, value in reading["metadata"].items():
        if isinstance(value, dict):
            flambe = {k: v for k, v in value.items() if k.startswith("_flambe")}
            found.setdefault(key.removesuffix("."), {}).update(flambe)
    return {prefix: entry for prefix, entry in found.items() if entry}


@pytest.mark.parametrize("name", ARCHIVES)
def test_flambe_reads_the_round_trip(flambe_readings: dict[str, Any], name: str) -> None:
    archive, got = ARCHIVES[name], flambe_readings[name]
    assert "error" not in got, got
    saved = archive.expected["saved"]
    if archive.layout == "pickle":
        assert got["keys"] == saved["keys"]
    else:
        assert sorted(got["keys"]) == sorted(saved["keys"])
    assert got["values"] == saved["values"]
    assert got["metadata"]["_flambe_directories"] == archive.directories
    assert node_metadata(got) == node_metadata(saved)

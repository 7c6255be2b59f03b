"""What flambe_compat writes in protocol 1, real flambe 0.4.18 reads: same keys, values, metadata.

Every corpus graph (as its pickle archive holds it) and a hand-made state with nested and
dotted Components, tensors of several dtypes and object stashes are saved in all four
modes, then read by flambe 0.4.18 through the oracle (tests/oracle.py) in one subprocess.
Skipped when the oracle is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flambe_compat import State, load_state_from_file, save_state_to_file
from flambe_compat import compress as gzip_framing
from flambe_compat.tree import node_metadata
from flambe_compat.write import archive_path
from tests.corpus import archives, describe
from tests.oracle import Oracle, find_oracle

ORACLE = find_oracle()
pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(ORACLE is None, reason="the flambe oracle is not installed"),
]

MODES: dict[str, tuple[bool, bool]] = {  # mode: (compress, pickle_only)
    "dir": (False, False),
    "compress": (True, False),
    "pickle_only": (False, True),
    "both": (True, True),
}
CORPUS_STATES = {f"{a.path.parent.name}-{a.graph}": a.path for a in archives() if a.mode == "pkl"}
HAND_MADE = "hand-made"
STATES = [*CORPUS_STATES, HAND_MADE]
OBJECT_STATES = [name for name in CORPUS_STATES if name.startswith("0.4.18-")]


def hand_made_state() -> State:
    """Components at '', 'a', 'a.plain.b' and 'a.plain.b.plain.c' (the last two reached
    through plain modules), tensors of several dtypes and shapes, stashes on two nodes."""
    generator = torch.Generator().manual_seed(0)
    state = State()
    state["step"] = 7
    state["weight"] = torch.randn(3, 4, generator=generator)
    state["a.scale"] = torch.randn(5, generator=generator, dtype=torch.float64)
    state["a.scalar"] = torch.tensor(2.5)
    state["a.empty"] = torch.zeros(0, 3)
    state["a.plain.linear.weight"] = torch.randn(2, 2, generator=generator).half()
    state["a.plain.b.table"] = torch.arange(12).reshape(3, 4)
    state["a.plain.b.strided"] = torch.randn(4, 6, generator=generator)[:, ::2]
    state["a.plain.b.mask"] = torch.tensor([True, False, True])
    state["a.plain.b.plain.c.codes"] = torch.arange(6, dtype=torch.uint8)
    state["a.plain.b.plain.c.name"] = "deep"
    module = {"version": 1}
    state._metadata = {
        "_flambe_directories": {"", "a", "a.plain.b", "a.plain.b.plain.c"},
        "keep_vars": False,
        "": {
            **module,
            **node_metadata("Root", "1.2.0", "class Root: ...\n", "!Root\nsize: 3\n"),
            "_flambe_stash": {"0": torch.arange(4.0), "1": {"k": [1, 2]}},
        },
        "a": {**module, **node_metadata("Inner", config="!Inner {}\n")},
        "a.plain": module,
        "a.plain.linear": module,
        "a.plain.b": {
            **node_metadata("Leaf", "0.1.0"),
            "_flambe_stash": {"lookup": np.arange(5, dtype=np.int32)},
        },
        "a.plain.b.plain": module,
        "a.plain.b.plain.c": node_metadata("Deep"),
    }
    return state


def state_named(name: str) -> State:
    return hand_made_state() if name == HAND_MADE else load_state_from_file(CORPUS_STATES[name])


def save_all_modes(state: State, base: Path) -> Iterator[tuple[str, Path]]:
    """Save `state` in each mode beside `base`; yields each mode and archive path."""
    for mode, (compress, pickle_only) in MODES.items():
        path = base.with_name(f"{base.name}-{mode}")
        save_state_to_file(state, path, compress=compress, pickle_only=pickle_only, protocol=1)
        yield mode, archive_path(path, compress, pickle_only)


def contract(reading: dict[str, Any], mode: str) -> dict[str, Any]:
    """What a reading of an archive saved in `mode` must keep (fixtures/flambe-corpus/README).

    Pickle archives keep everything. flambe's folder reader returns the keys in folder
    order, files a node's torch metadata under `prefix.` (trailing dot) and drops the
    root's: those quirks are folded away, and only the root's node metadata is compared.
    """
    _, pickle_only = MODES[mode]
    if pickle_only:
        return reading
    metadata: dict[str, Any] = {}
    for key, value in reading["metadata"].items():
        if isinstance(value, dict):
            metadata.setdefault(key.removesuffix("."), {}).update(value)
        else:
            metadata[key] = value
    metadata[""] = {k: v for k, v in metadata[""].items() if k.startswith("_flambe")}
    return {**reading, "keys": sorted(reading["keys"]), "metadata": metadata}


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    assert ORACLE is not None
    return ORACLE


@pytest.fixture(scope="module")
def flambe_readings(
    oracle: Oracle, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]]:
    """Per (state, mode): our description of the state saved, and flambe's reading of it.

    tar.gz files are written in gzip members of 4 KiB, so that flambe reads many."""
    folder = tmp_path_factory.mktemp("interop")
    saved: dict[tuple[str, str], tuple[dict[str, Any], Path]] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gzip_framing, "MEMBER_BYTES", 4096)
        for name in STATES:
            state = state_named(name)
            for mode, path in save_all_modes(state, folder / name):
                saved[name, mode] = describe(state), path
                if MODES[mode][0]:
                    with path.open("rb") as raw:
                        assert len(gzip_framing._member_index(raw.fileno()) or []) > 1
    readings = oracle.read([path for _, path in saved.values()], cwd=folder)
    return {key: (want, readings[str(path)]) for key, (want, path) in saved.items()}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", STATES)
def test_flambe_reads_what_we_write(
    flambe_readings: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]],
    name: str,
    mode: str,
) -> None:
    want, got = flambe_readings[name, mode]
    assert "error" not in got, got
    want, got = contract(want, mode), contract(got, mode)
    assert got["keys"] == want["keys"]
    assert got["values"] == want["values"]
    assert got["metadata"]["_flambe_directories"] == want["metadata"]["_flambe_directories"]
    assert got["metadata"] == want["metadata"]


def test_the_dotted_folder_is_named_right(tmp_path: Path) -> None:
    """flambe's writer would put the deepest Component in `a/plain.b/b.plain.c`."""
    save_state_to_file(hand_made_state(), tmp_path / "m", protocol=1)
    assert (tmp_path / "m" / "a" / "plain.b" / "plain.c" / "state.pt").is_file()
    assert not (tmp_path / "m" / "a" / "plain.b" / "b.plain.c").exists()


def test_flambe_load_rebuilds_objects_we_saved(oracle: Oracle, tmp_path: Path) -> None:
    """flambe's object `load` (config, then state) works on corpus graphs we re-saved."""
    expected: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in OBJECT_STATES:
        state = state_named(name)
        for _, archive in save_all_modes(state, tmp_path / name):
            expected[str(archive)] = state._metadata[""]["_flambe_class"], describe(state)
    readings = oracle.read([Path(p) for p in expected], objects=True, cwd=tmp_path)
    assert len(readings) == len(expected) == 4 * len(OBJECT_STATES) > 0
    for path, (class_name, want) in expected.items():
        got = readings[path]
        assert "error" not in got, (path, got)
        assert got["class"] == class_name, path
        assert sorted(got["state"]["keys"]) == sorted(want["keys"]), path
        assert got["state"]["values"] == want["values"], path

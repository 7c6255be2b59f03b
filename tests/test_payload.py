"""Payloads: formats from magic bytes, the zip file's pickle record, the opcode scanner."""

from __future__ import annotations

import datetime
import io
import pickle
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from flambe_compat.manifest import unsafe_globals
from flambe_compat.payload import (
    MAX_PICKLE_BYTES,
    pickle_record,
    read_payload_file,
    scan_pickle,
)


@dataclass
class Point:
    """A module-level class: pickles name it, and the allow-list does not."""

    x: int


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_globals_in_every_protocol(protocol: int) -> None:
    data = pickle.dumps([datetime.datetime(2020, 1, 1), {1}, Point(1)], protocol=protocol)
    assert scan_pickle(data).globals >= {"datetime.datetime", f"{__name__}.Point"}
    assert "builtins.set" in scan_pickle(data).globals or protocol >= 4  # 4+ has EMPTY_SET


def test_stack_global_names_traced_through_the_memo() -> None:
    ops = (
        b"\x80\x04"
        + b"\x8c\x02os\x94"  # SHORT_BINUNICODE 'os', MEMOIZE 0
        + b"\x8c\x04path\x94"  # 'path', MEMOIZE 1
        + b"\x93\x94"  # STACK_GLOBAL os.path, MEMOIZE 2
        + b"h\x00\x8c\x06system\x93"  # BINGET 0 ('os'), 'system', STACK_GLOBAL os.system
        + b"\x86"  # TUPLE2
        + b"(h\x00t0"  # MARK, BINGET 0, TUPLE, POP: the stack is as it was
        + b"\x8c\x02nt20"  # 'nt', DUP, POP
        + b"\x8c\x05spawn\x93"  # 'spawn', STACK_GLOBAL nt.spawn
        + b"\x86."  # TUPLE2, STOP
    )
    pickletools.dis(ops, out=io.StringIO())  # a well-formed pickle
    assert scan_pickle(ops).globals == {"os.path", "os.system", "nt.spawn"}


def test_stack_global_of_untraceable_names_is_unsafe() -> None:
    ops = b"\x80\x04K\x01K\x02\x93."  # two integers, then STACK_GLOBAL
    assert scan_pickle(ops).globals == {"?"}
    assert unsafe_globals(scan_pickle(ops).globals) == ["?"]


def test_python_2_names_are_mapped_as_unpickling_maps_them() -> None:
    assert scan_pickle(b"\x80\x02c__builtin__\nset\nq\x00.").globals == {"builtins.set"}
    assert scan_pickle(b"\x80\x02ccopy_reg\n_reconstructor\nq\x00.").globals == {
        "copyreg._reconstructor"
    }


def nested_lists(depth: int) -> bytes:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return pickle.dumps(value, protocol=2)


@pytest.mark.parametrize("depth", [1, 2, 50])
def test_the_scanner_measures_nesting(depth: int) -> None:
    scan = scan_pickle(nested_lists(depth))
    assert (scan.depth, scan.complete) == (depth, True)


def test_a_value_modified_in_place_counts_its_parts() -> None:
    shared: list[object] = []
    outer = [shared, shared]
    shared.append([[1]])
    assert scan_pickle(pickle.dumps(outer, protocol=2)).depth == 5  # STOP counts one


def test_the_scanner_stops_at_the_limit_and_at_malformed_opcodes() -> None:
    assert scan_pickle(nested_lists(100), max_depth=10).depth == 11
    truncated = scan_pickle(pickle.dumps({"_metadata": 1}, protocol=2)[:-1])
    assert "_metadata" in truncated.strings and not truncated.complete


def test_one_rule_finds_data_pkl(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/data.pkl", b"x")
        archive.writestr("m/nested/data.pkl", b"y")
    with zipfile.ZipFile(path) as archive:
        assert pickle_record(archive) == b"x"
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("n/data.pkl", b"z")
    with zipfile.ZipFile(path) as archive, pytest.raises(pickle.UnpicklingError, match="single"):
        pickle_record(archive)


def test_a_data_pkl_over_the_cap_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/data.pkl", b"x" * 100)
    monkeypatch.setattr("flambe_compat.payload.MAX_PICKLE_BYTES", 99)
    with zipfile.ZipFile(path) as archive, pytest.raises(pickle.UnpicklingError, match="larger"):
        pickle_record(archive)
    assert MAX_PICKLE_BYTES == 256 << 20


@pytest.mark.parametrize("whole", [True, False])
def test_payload_files_are_read_whole_only_when_small_and_asked(
    tmp_path: Path, whole: bool
) -> None:
    path = tmp_path / "stash.pkl"
    path.write_bytes(pickle.dumps({}, protocol=2))
    payload = read_payload_file(path, path.stat().st_size, whole)
    assert payload.format == "pickle"
    assert (payload.data is not None) == whole
    with payload.open() as file:
        assert pickle.load(file) == {}

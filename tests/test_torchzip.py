"""The direct reader of torch's zip format: the values `torch.load` gives, from a path, a
mapping, a file or memory; what it declines; malformed files it refuses."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from flambe_compat import load_state_from_file, save_state_to_file
from flambe_compat.torchzip import Declined, load_zip, plan_zip
from flambe_compat.unpickle import Trust, UnsafeGlobalError, pickle_module_for
from tests.test_write import make_state

UNPICKLER = pickle_module_for(Trust()).Unpickler


def sample() -> dict[str, Any]:
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    state: OrderedDict[str, Any] = OrderedDict()
    state["weight"] = torch.randn(3, 5)
    state["half"] = torch.randn(7).to(torch.bfloat16)
    state["ints"] = torch.arange(5, dtype=torch.int16)
    state["flags"] = torch.tensor([True, False])
    state["complex"] = torch.randn(2, dtype=torch.complex64)
    state["empty"] = torch.empty(0, 3)
    state["scalar"] = torch.tensor(3.5)
    state["base"] = base
    state["view"] = base[1:, 2:]  # shares base's storage, at an offset
    state["transposed"] = base.t()
    state["parameter"] = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    state["trained"] = torch.ones(3, requires_grad=True)
    state["nested"] = {"list": [torch.zeros(1), 1, "a"], "tuple": (2.5, None)}
    state._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    return state


def saved(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def assert_same(ours: Any, theirs: Any) -> None:
    assert type(ours) is type(theirs)
    if isinstance(theirs, torch.Tensor):
        assert (ours.dtype, ours.shape, ours.stride()) == (
            theirs.dtype,
            theirs.shape,
            theirs.stride(),
        )
        assert ours.storage_offset() == theirs.storage_offset()
        assert ours.requires_grad == theirs.requires_grad
        assert torch.equal(ours, theirs)
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs)
        assert getattr(ours, "_metadata", None) == getattr(theirs, "_metadata", None)
        for key in theirs:
            assert_same(ours[key], theirs[key])
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs)
        for mine, other in zip(ours, theirs, strict=True):
            assert_same(mine, other)
    else:
        assert ours == theirs


@pytest.mark.parametrize("source", ["path", "mmap", "file", "memory"])
def test_gives_what_torch_load_gives(source: str, tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    path.write_bytes(saved(sample()))
    expected = torch.load(path, weights_only=True)
    if source in ("path", "mmap"):
        loaded = load_zip(path, UNPICKLER, mmap=source == "mmap")
    elif source == "file":
        with path.open("rb") as file:
            loaded = load_zip(file, UNPICKLER)
    else:
        loaded = load_zip(bytearray(path.read_bytes()), UNPICKLER)
    assert_same(loaded, expected)
    # one storage per record, shared as torch shares it
    assert (
        loaded["view"].untyped_storage().data_ptr() == loaded["base"].untyped_storage().data_ptr()
    )


def test_tensors_share_the_memory_they_were_read_from() -> None:
    data = bytearray(saved({"w": torch.zeros(4)}))
    loaded = load_zip(data, UNPICKLER)
    loaded["w"] += 1
    assert torch.equal(load_zip(data, UNPICKLER)["w"], torch.ones(4))


def test_a_memory_mapped_load_reads_tensor_bytes_only_when_used(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    path.write_bytes(saved({"w": torch.arange(10.0)}))
    loaded = load_zip(path, UNPICKLER, mmap=True)
    path.unlink()  # the mapping holds the bytes on, as torch.load(mmap=True)'s does
    assert torch.equal(loaded["w"], torch.arange(10.0))


def test_the_allow_list_still_decides() -> None:
    with pytest.raises(UnsafeGlobalError, match=r"builtins\.print"):
        load_zip(bytearray(saved({"f": print})), UNPICKLER)


@pytest.mark.parametrize(
    "value, map_location",
    [
        (b"\x80\x02}q\x00.", None),  # a bare pickle
        (saved({"w": torch.ones(1)}), "meta"),  # another device: torch.load maps it
    ],
)
def test_declines_what_torch_load_should_read(value: bytes, map_location: Any) -> None:
    file = io.BytesIO(value)
    with pytest.raises(Declined):
        load_zip(file, UNPICKLER, map_location=map_location)
    assert file.tell() == 0


def test_declines_to_load_in_a_fake_tensor_mode_where_torch_load_makes_fake_tensors() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    file = io.BytesIO(saved({"w": torch.ones(2)}))
    with FakeTensorMode(), pytest.raises(Declined, match="fake tensor mode"):
        load_zip(file, UNPICKLER)
    assert file.tell() == 0


def test_declines_torchscript() -> None:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(1, 1)), buffer)
    with pytest.raises(Declined):
        load_zip(bytearray(buffer.getvalue()), UNPICKLER)


def rewritten(data: bytes, change: Any) -> bytearray:
    """The zip file `data` with each record passed through `change(name, bytes)`, which
    returns the new bytes and compression (`None`: drop the record)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            new = change(info.filename, source.read(info))
            if new is not None:
                target.writestr(info.filename, new[0], compress_type=new[1])
    return bytearray(out.getvalue())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda n, b: None if "/data/" in n else (b, zipfile.ZIP_STORED), "no record"),
        (lambda n, b: (b[:-4] if "/data/" in n else b, zipfile.ZIP_STORED), "stored bytes"),
    ],
    ids=["missing-record", "short-record"],
)
def test_refuses_records_that_do_not_hold_the_storage(change: Any, message: str) -> None:
    data = rewritten(saved({"w": torch.randn(64)}), change)
    with pytest.raises(pickle.UnpicklingError, match=message):
        load_zip(data, UNPICKLER)


@pytest.mark.parametrize("compressed", ["/data/", "data.pkl"])
def test_declines_compressed_records(compressed: str) -> None:
    data = rewritten(
        saved({"w": torch.randn(64)}),
        lambda n, b: (b, zipfile.ZIP_DEFLATED if compressed in n else zipfile.ZIP_STORED),
    )
    with pytest.raises(Declined, match="compressed"):
        load_zip(data, UNPICKLER)


def zip_end(data: bytearray) -> int:
    return data.rindex(b"PK\x05\x06")


def more_records(data: bytearray, more: int) -> bytearray:
    """`data` with its end record counting `more` records than its directory holds."""
    end = zip_end(data)
    count = int.from_bytes(data[end + 10 : end + 12], "little") + more
    data[end + 8 : end + 12] = count.to_bytes(2, "little") * 2
    return data


def test_declines_a_zip_comment() -> None:
    data = bytearray(saved({"w": torch.randn(4)})) + b"comment"
    end = zip_end(data)
    data[end + 20 : end + 22] = (7).to_bytes(2, "little")
    assert torch.load(io.BytesIO(data), weights_only=True)["w"].shape == (4,)
    with pytest.raises(Declined, match="comment"):
        load_zip(data, UNPICKLER)


def test_refuses_two_records_of_one_name() -> None:
    buffer = io.BytesIO(saved({"w": torch.randn(4)}))
    with zipfile.ZipFile(buffer, "a") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("archive/version", b"3\n")
    with pytest.raises(zipfile.BadZipFile, match="two records"):
        load_zip(bytearray(buffer.getvalue()), UNPICKLER)


@pytest.mark.parametrize(
    "cut, error",
    [
        (lambda d: d[:10], zipfile.BadZipFile),
        (lambda d: d[: zip_end(d) + 4] + bytes(18), pickle.UnpicklingError),  # no records
        (lambda d: more_records(d, 1), zipfile.BadZipFile),
        (lambda d: more_records(d, 0xFFFF - d[zip_end(d) + 10]), Declined),  # a ZIP64 count
    ],
    ids=["short", "empty-directory", "records-missing", "zip64"],
)
def test_refuses_a_broken_directory(cut: Any, error: type[Exception]) -> None:
    data = bytearray(cut(bytearray(saved({"w": torch.randn(4)}))))
    with pytest.raises(error):
        load_zip(data, UNPICKLER)


def test_refuses_a_local_header_naming_another_record() -> None:
    data = bytearray(saved({"w": torch.randn(4)}))
    at = data.index(b"archive/data.pkl")  # the first local header's name
    data[at : at + 7] = b"ARCHIVE"
    with pytest.raises(zipfile.BadZipFile, match="names itself otherwise"):
        load_zip(data, UNPICKLER)


def test_refuses_a_corrupted_pickle_record() -> None:
    data = bytearray(saved({"w": torch.ones(1), "name": "abcdefgh"}))
    at = data.index(b"abcdefgh")
    data[at] ^= 0xFF
    with pytest.raises(zipfile.BadZipFile, match="CRC"):
        load_zip(data, UNPICKLER)


def test_declines_a_storage_saved_on_another_device() -> None:
    def on_xpu(name: str, data: bytes) -> tuple[bytes, int]:
        return data.replace(b"cpu", b"xpu") if name.endswith("data.pkl") else data, 0

    file = io.BytesIO(rewritten(saved({"w": torch.ones(2)}), on_xpu))
    with pytest.raises(Declined, match="xpu"):
        load_zip(file, UNPICKLER)
    assert file.tell() == 0


# --- writing ---


def written(value: Any) -> bytes:
    buffer = io.BytesIO()
    planned = plan_zip(value)
    assert planned is not None
    planned.write(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("deferred_crc", [False, True])
def test_torch_loads_what_it_writes(mmap: bool, deferred_crc: bool, tmp_path: Path) -> None:
    state = sample()
    state["large"] = torch.randn(1 << 19)  # 2 MiB: its CRC may follow its bytes
    path = tmp_path / "state.pt"
    with ThreadPoolExecutor(1) as executor, path.open("wb") as file:
        planned = plan_zip(state)
        assert planned is not None
        planned.write(file, executor if deferred_crc else None)
    assert zipfile.ZipFile(path).testzip() is None
    loaded = torch.load(path, weights_only=True, mmap=mmap)
    assert_same(loaded, state)
    assert_same(load_zip(path, UNPICKLER, mmap=mmap), state)
    assert (
        loaded["view"].untyped_storage().data_ptr() == loaded["base"].untyped_storage().data_ptr()
    )


def test_it_writes_the_records_torch_writes_with_data_aligned_for_mapping() -> None:
    state = {"a": torch.ones(3), "b": torch.arange(5)}
    ours = zipfile.ZipFile(io.BytesIO(written(state)))
    theirs = zipfile.ZipFile(io.BytesIO(saved(state)))
    assert ours.namelist() == theirs.namelist()
    assert ours.testzip() is None  # every CRC right
    data = written(state)
    for info in ours.infolist():
        if "/data/" in info.filename:
            start = info.header_offset + 30 + len(info.filename)
            start += int.from_bytes(
                data[info.header_offset + 28 : info.header_offset + 30], "little"
            )
            assert start % 64 == 0
            assert data[start : start + info.file_size] == ours.read(info)
    for name in ours.namelist():
        if "/data/" in name or name.endswith("data.pkl"):
            assert ours.read(name) == theirs.read(name)


@pytest.mark.parametrize("executor", [False, True])
@pytest.mark.parametrize(
    "value",
    [
        {},
        {"w": torch.ones(3)},
        {"large": torch.randn(1 << 19), "small": torch.arange(7), "name": "n" * 300},
        {f"layer{n}.weight": torch.randn(n + 1, 3).double() for n in range(40)},
    ],
    ids=["no-tensor", "one-tensor", "large-record", "many-records"],
)
def test_a_plan_knows_the_size_of_the_file_before_writing_it(value: Any, executor: bool) -> None:
    planned = plan_zip(value)
    assert planned is not None
    buffer = io.BytesIO()
    with ThreadPoolExecutor(1) as pool:
        planned.write(buffer, pool if executor else None)
    assert planned.size == len(buffer.getvalue())
    assert zipfile.ZipFile(buffer).testzip() is None
    assert planned.pickled == zipfile.ZipFile(buffer).read("archive/data.pkl")


def test_too_large_for_a_plain_zip_file_it_has_no_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flambe_compat.torchzip.MAX_ZIP_BYTES", 16)
    assert plan_zip({"w": torch.ones(4)}) is None


def test_a_protocol_2_save_too_large_for_it_goes_through_torch_save(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("flambe_compat.torchzip.MAX_ZIP_BYTES", 16)
    state = make_state(nodes=2)
    save_state_to_file(state, tmp_path / "m", protocol=2)
    loaded = load_state_from_file(tmp_path / "m")
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        same = torch.equal(loaded[key], value) if isinstance(value, torch.Tensor) else None
        assert same if same is not None else loaded[key] == value


def test_views_of_one_storage_as_different_types_are_refused_as_torch_refuses() -> None:
    base = torch.zeros(4)
    with pytest.raises(RuntimeError, match="different types"):
        plan_zip({"f": base, "i": base.view(torch.int32)})

"""Random flambe-shaped states survive every writer and reader and load back exactly.

Both protocols (1: flambe's, written with dill; 2: ours) in all four modes. Everything
comes back with its exact type (tuples stay tuples, `Parameter`s stay `Parameter`s),
bit-identical numbers (-0.0 included) and tensor layout (stride, offset). What the formats
cannot keep (the first two pinned by plain tests below):
- storage sharing between views survives every `torch.save` (one per node folder, one
  per protocol 2 pickle) but not protocol 1 pickles, which pickle each tensor's storage
  on its own (`torch.Tensor.__reduce_ex__`, as flambe's did), nor across node folders;
- for the same reason only protocol 1 pickles hold two views of one storage with
  different dtypes: `torch.save` refuses them, so the save fails and leaves nothing;
- protocol 1 pickles of uint16/32/64, float8 or complex32 tensors save but never load:
  torch cannot unpickle those dtypes (plain `pickle` neither);
- folder archives return keys grouped by node folder, not in the saved order, and a
  Component's metadata entry as a `dict` (an `OrderedDict` entry loses its type);
- a Component folder named like a node file (`source.py`, `config.yaml`...) cannot be written;
- dill pickles `range` and `Ellipsis` through `eval` (`dill._dill._eval_repr`): refused.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, note

from flambe_compat import State, load_state_from_file, save_state_to_file
from flambe_compat.layout import PROTOCOL_1, PROTOCOL_2
from flambe_compat.tree import node_metadata
from flambe_compat.write import archive_path
from tests.strategies import states

MODES = {
    "directory": (False, False),
    "compress": (True, False),
    "pickle_only": (False, True),
    "compress+pickle_only": (True, True),
}


def torch_saved(protocol: int, pickle_only: bool) -> bool:
    """Whether the archive's payloads are `torch.save` files (else one dill pickle)."""
    return protocol == PROTOCOL_2 or not pickle_only


def save_and_load(
    state: State,
    protocol: int,
    compress: bool,
    pickle_only: bool,
) -> State:
    """Save `state` into a fresh folder and load it back."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "saved"
        save_state_to_file(
            state, path, compress=compress, pickle_only=pickle_only, protocol=protocol
        )
        return load_state_from_file(archive_path(path, compress, pickle_only))


def assert_same(got: Any, want: Any, where: str) -> None:
    """`got` is `want`'s exact copy: same types all the way down, bit-identical numbers."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, torch.Tensor):
        assert _layout(got) == _layout(want), where
        assert torch.equal(_bits(got), _bits(want)), where
    elif isinstance(want, (np.ndarray, np.generic)):
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        assert got.tobytes() == want.tobytes(), where
    elif isinstance(want, float):
        assert got.hex() == want.hex(), where
    elif isinstance(want, Mapping):
        assert list(got) == list(want), where
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == want, where


def _layout(tensor: torch.Tensor) -> tuple[Any, ...]:
    """Everything about a tensor but its values."""
    return (
        tensor.dtype,
        tensor.shape,
        tensor.stride(),
        tensor.storage_offset(),
        tensor.requires_grad,
    )


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes in logical order, so that -0.0 and 0.0 differ."""
    dense = torch.empty(tensor.shape, dtype=tensor.dtype).copy_(tensor.detach())
    return dense.reshape(-1).view(torch.uint8)


def storage_groups(state: State) -> set[frozenset[str]]:
    """Keys of top-level tensors grouped by the storage they share."""
    groups: dict[int, set[str]] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.untyped_storage().nbytes():
            groups.setdefault(value.untyped_storage().data_ptr(), set()).add(key)
    return {frozenset(keys) for keys in groups.values()}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", [PROTOCOL_1, PROTOCOL_2])
@given(state=states())
def test_roundtrip(protocol: int, mode: str, state: State) -> None:
    note(f"_metadata = {state._metadata!r}")
    compress, pickle_only = MODES[mode]
    got = save_and_load(state, protocol, compress, pickle_only)
    if pickle_only:
        assert list(got) == list(state)
    else:
        assert sorted(got) == sorted(state)
    if torch_saved(protocol, pickle_only):
        assert storage_groups(got) == storage_groups(state)
    for key in state:
        assert_same(got[key], state[key], key)
    assert sorted(got._metadata) == sorted(state._metadata)
    for key in state._metadata:
        assert_same(got._metadata[key], state._metadata[key], f"_metadata[{key!r}]")


def one_node_state(**values: Any) -> State:
    """A State of one root Component holding `values`."""
    state = State(values)
    state._metadata = {"_flambe_directories": {""}, "keep_vars": False, "": node_metadata("R")}
    return state


UINT16 = torch.tensor([1, 2], dtype=torch.uint16)
SPARSE = torch.eye(2).to_sparse()
REGRESSIONS = [
    # dill pickles numpy arrays through dill._dill._create_array
    pytest.param(PROTOCOL_1, False, np.arange(3), id="numpy-1-directory"),
    pytest.param(PROTOCOL_1, True, np.arange(3), id="numpy-1-pickle_only"),
    # torch names torch.storage.UntypedStorage for dtypes without a typed storage class
    pytest.param(PROTOCOL_1, False, UINT16, id="uint16-1-directory"),
    pytest.param(PROTOCOL_2, False, UINT16, id="uint16-2-directory"),
    pytest.param(PROTOCOL_2, True, UINT16, id="uint16-2-pickle_only"),
    # validation peeks at sparse tensors without torch's sparse rebuild
    pytest.param(PROTOCOL_2, False, SPARSE, id="sparse-2-directory"),
    pytest.param(PROTOCOL_2, True, SPARSE, id="sparse-2-pickle_only"),
]


@pytest.mark.parametrize(("protocol", "pickle_only", "value"), REGRESSIONS)
def test_loads_by_default(protocol: int, pickle_only: bool, value: Any) -> None:
    got = save_and_load(one_node_state(value=value), protocol, False, pickle_only)["value"]
    assert type(got) is type(value)
    assert repr(got) == repr(value)


TORCH_SAVED = [
    pytest.param(protocol, pickle_only, id=f"{protocol}-{mode}")
    for mode, (compress, pickle_only) in MODES.items()
    for protocol in (PROTOCOL_1, PROTOCOL_2)
    if not compress and torch_saved(protocol, pickle_only)
]


def test_protocol_1_pickles_store_each_view_on_its_own() -> None:
    base = torch.arange(6.0).reshape(2, 3)
    state = one_node_state(base=base, transposed=base.t())
    got = save_and_load(state, PROTOCOL_1, False, True)
    assert_same(got["transposed"], state["transposed"], "transposed")
    assert storage_groups(got) == {frozenset({"base"}), frozenset({"transposed"})}


@pytest.mark.parametrize(("protocol", "pickle_only"), TORCH_SAVED)
def test_torch_saved_archives_refuse_views_of_one_storage_as_two_dtypes(
    protocol: int, pickle_only: bool
) -> None:
    base = torch.zeros(2)
    state = one_node_state(base=base, bits=base.view(torch.int32))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "saved"
        with pytest.raises(RuntimeError, match="view the same data as different types"):
            save_state_to_file(state, path, pickle_only=pickle_only, protocol=protocol)
        assert list(Path(folder).iterdir()) == []

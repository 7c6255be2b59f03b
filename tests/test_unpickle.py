"""The allow-list unpickler (`flambe_compat.unpickle`), on hand-made pickles.

Archive-level cases (every bad input inside every kind of payload) are in
`test_bad_inputs.py`; these check the module's own rules one by one.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
from typing import Any

import pytest
import torch

from flambe_compat.state import State
from flambe_compat.unpickle import (
    MAX_NESTING,
    MAX_RANGE,
    Trust,
    UnsafeGlobalError,
    check_nesting,
    pickle_module_for,
    torch_load,
    unpickle,
)


def load(data: bytes, trust: Trust | None = None) -> Any:
    return unpickle(io.BytesIO(data), trust or Trust())


def global_op(qualified: str) -> bytes:
    """The GLOBAL opcode naming `module.name`."""
    module, _, name = qualified.rpartition(".")
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def reduce_call(qualified: str, *args: int) -> bytes:
    """A protocol 2 pickle calling `qualified(*args)` (ints only)."""
    pushed = b"".join(b"J" + arg.to_bytes(4, "little", signed=True) for arg in args)
    return b"\x80\x02" + global_op(qualified) + b"(" + pushed + b"tR."


def test_plain_values_load() -> None:
    value = {"a": [1, 2.5, None, "x"], "b": (True, b"raw"), "c": {1, 2}, "d": frozenset("ab")}
    assert load(pickle.dumps(value, protocol=2)) == value
    assert load(pickle.dumps(collections.OrderedDict(a=1))) == collections.OrderedDict(a=1)


def test_flambe_state_is_ours() -> None:
    state = State(a=1)
    state._metadata = {"": {"version": 1}}
    data = pickle.dumps(state, protocol=2)
    legacy = data.replace(b"flambe_compat.state", b"flambe.compile.serialization")
    assert b"flambe.compile.serialization\nState" in legacy
    loaded = load(legacy)
    assert type(loaded) is State and loaded == {"a": 1}
    assert loaded._metadata == {"": {"version": 1}}


def test_an_unknown_global_is_named_with_both_fixes() -> None:
    with pytest.raises(UnsafeGlobalError) as raised:
        load(pickle.dumps(collections.Counter("ab")))
    assert raised.value.qualified_name == "collections.Counter"
    message = str(raised.value)
    assert "global collections.Counter is not on the allow-list" in message
    assert "allow_globals=['collections.Counter']" in message and "trusted=True" in message


def test_allow_globals_admits_the_names_given() -> None:
    data = pickle.dumps(collections.Counter("aab"))
    assert load(data, Trust(allow_globals=("collections.Counter",))) == {"a": 2, "b": 1}
    assert Trust.of([collections.Counter]) == Trust(allow_globals=("collections.Counter",))
    with pytest.raises(UnsafeGlobalError, match="cannot be found"):
        load(
            b"\x80\x02" + global_op("collections.NoSuchThing") + b".",
            Trust(allow_globals=("collections.NoSuchThing",)),
        )


def test_trusted_loads_any_global() -> None:
    assert load(pickle.dumps(collections.Counter("a")), Trust(trusted=True)) == {"a": 1}
    assert load(pickle.dumps(print), Trust(trusted=True)) is print


@pytest.mark.parametrize(
    ("name", "args", "refusal"),
    [
        ("builtins.bytes", (1 << 30,), "a size, not data"),
        ("builtins.bytearray", (1 << 30,), "a size, not data"),
        ("builtins.range", (0, MAX_RANGE + 1), "longer than"),
    ],
)
def test_constructors_that_allocate_without_bound_are_refused(
    name: str, args: tuple[int, ...], refusal: str
) -> None:
    with pytest.raises(pickle.UnpicklingError, match=refusal):
        load(reduce_call(name, *args))


def test_checked_constructors_still_build_values() -> None:
    assert load(reduce_call("builtins.range", 3, 9)) == range(3, 9)
    assert load(pickle.dumps(bytearray(b"abc"), protocol=2)) == bytearray(b"abc")
    assert load(pickle.dumps(range(5), protocol=2)) == range(5)


def test_dill_types_only_for_harmless_builtins() -> None:
    def dill_type(name: str) -> bytes:
        text = name.encode()
        return b"\x80\x02" + global_op("dill._dill._load_type") + b"X" + (
            len(text).to_bytes(4, "little") + text
        ) + b"\x85R."  # fmt: skip

    assert load(dill_type("set")) is set
    with pytest.raises(UnsafeGlobalError, match="outside the harmless builtins"):
        load(dill_type("function"))


def test_an_allowed_function_comes_back_as_a_fresh_partial() -> None:
    target = torch._utils._rebuild_tensor_v2
    loaded = load(pickle.dumps(target, protocol=2))
    assert loaded.func is target and loaded is not load(pickle.dumps(target, protocol=2))
    build = (
        b"\x80\x02" + global_op("torch._utils._rebuild_tensor_v2")
        + b"N}X\x06\x00\x00\x00injectK\x01s\x86b."
    )  # fmt: skip
    with pytest.raises(TypeError, match="partial state"):  # BUILD reaches the partial only
        load(build)
    assert not hasattr(target, "inject")


def test_a_build_on_an_allowed_class_is_refused_and_undone() -> None:
    state = b"N}X\x01\x00\x00\x00xK\x01s\x86b."  # BUILD (None, {"x": 1})
    data = b"\x80\x02" + global_op("flambe_compat.state.State") + state
    with pytest.raises(pickle.UnpicklingError, match="modified the class flambe_compat"):
        load(data)
    assert "x" not in vars(State)


def test_nesting_is_checked_before_unpickling() -> None:
    deep = b"\x80\x02" + b"]" * (MAX_NESTING + 1) + b"a" * MAX_NESTING + b"."
    with pytest.raises(pickle.UnpicklingError, match=f"deeper than {MAX_NESTING}"):
        load(deep)
    shallow = io.BytesIO(b"\x00" * 7 + pickle.dumps([[1]] * 5000, protocol=2))
    shallow.seek(7)
    check_nesting(shallow)
    assert shallow.tell() == 7  # rewound for the unpickler
    assert list(pickletools.genops(shallow))[-1][0].name == "STOP"


def test_the_pickle_module_is_built_once_per_policy() -> None:
    first = pickle_module_for(Trust())
    assert pickle_module_for(Trust()) is first
    assert pickle_module_for(Trust(allow_globals=("collections.Counter",))) is not first
    by_dict = pickle_module_for(Trust(), map_location={"cuda:0": "cpu"})  # unhashable: not cached
    assert by_dict.load(io.BytesIO(pickle.dumps([1]))) == [1]


def test_torch_files_load_through_the_same_rules() -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(4.0), "n": collections.Counter("a")}, buffer)
    with pytest.raises(UnsafeGlobalError, match=r"collections\.Counter"):
        torch_load(bytearray(buffer.getvalue()), Trust())
    loaded = torch_load(bytearray(buffer.getvalue()), Trust.of([collections.Counter]))
    assert torch.equal(loaded["w"], torch.arange(4.0)) and loaded["n"] == {"a": 1}

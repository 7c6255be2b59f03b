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
from tests.badinputs import a_pickle, op_call, op_global, op_int, op_text


def load(data: bytes, trust: Trust | None = None) -> Any:
    return unpickle(io.BytesIO(data), trust or Trust())


def reduce_call(module: str, name: str, *args: int) -> bytes:
    """A protocol 2 pickle calling `module.name(*args)`."""
    return a_pickle(op_call(op_global(module, name), *map(op_int, args)))


def build_on(module: str, name: str, attribute: str) -> bytes:
    """A pickle applying BUILD `(None, {attribute: 1})` to the global `module.name`."""
    state = b"N}" + op_text(attribute) + op_int(1) + b"s\x86"
    return a_pickle(op_global(module, name) + state + b"b")


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
            a_pickle(op_global("collections", "NoSuchThing")),
            Trust(allow_globals=("collections.NoSuchThing",)),
        )


def test_trusted_loads_any_global() -> None:
    assert load(pickle.dumps(collections.Counter("a")), Trust(trusted=True)) == {"a": 1}
    assert load(pickle.dumps(print), Trust(trusted=True)) is print


@pytest.mark.parametrize(
    ("name", "args", "refusal"),
    [
        ("bytes", (1 << 30,), "a size, not data"),
        ("bytearray", (1 << 30,), "a size, not data"),
        ("range", (0, MAX_RANGE + 1), "longer than"),
    ],
)
def test_constructors_that_allocate_without_bound_are_refused(
    name: str, args: tuple[int, ...], refusal: str
) -> None:
    with pytest.raises(pickle.UnpicklingError, match=refusal):
        load(reduce_call("builtins", name, *args))


def test_checked_constructors_still_build_values() -> None:
    assert load(reduce_call("builtins", "range", 3, 9)) == range(3, 9)
    assert load(pickle.dumps(bytearray(b"abc"), protocol=2)) == bytearray(b"abc")
    assert load(pickle.dumps(range(5), protocol=2)) == range(5)


def test_dill_types_only_for_harmless_builtins() -> None:
    def dill_type(name: str) -> bytes:
        return a_pickle(op_call(op_global("dill._dill", "_load_type"), op_text(name)))

    assert load(dill_type("set")) is set
    with pytest.raises(UnsafeGlobalError, match="outside the harmless builtins"):
        load(dill_type("function"))


def test_an_allowed_function_comes_back_as_a_fresh_partial() -> None:
    target = torch._utils._rebuild_tensor_v2
    loaded = load(pickle.dumps(target, protocol=2))
    assert loaded.func is target and loaded is not load(pickle.dumps(target, protocol=2))
    build = build_on("torch._utils", "_rebuild_tensor_v2", "inject")
    with pytest.raises(TypeError, match="partial state"):  # BUILD reaches the partial only
        load(build)
    assert not hasattr(target, "inject")


def test_a_build_on_an_allowed_class_is_refused_and_undone() -> None:
    data = build_on("flambe_compat.state", "State", "x")
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

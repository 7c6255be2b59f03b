"""`Component`: flambe's state contract (metadata, hooks, registered attributes, versions)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from flambe_compat import Component, LoadError, State
from flambe_compat.component import version_mismatch


class Leaf(Component, torch.nn.Module, tag_namespace="component_tests"):
    _flambe_version = "1.1.1"

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(size, size)
        self.label = "leaf"
        self.register_attrs("label")


class Holder(Component, tag_namespace="component_tests"):
    def __init__(self, leaf: Leaf, plain: torch.nn.Module, optimizer: Any = None) -> None:
        self.leaf = leaf
        self.plain = plain
        self.optimizer = optimizer
        self.listed = [Leaf()]
        self.extra = 0

    def _state(self, state_dict: State, prefix: str, local_metadata: dict[str, Any]) -> State:
        state_dict[prefix + "extra"] = self.extra
        local_metadata["note"] = "custom"
        return state_dict

    def _load_state(self, state_dict: State, prefix: str, *args: Any) -> None:
        self.extra = state_dict[prefix + "extra"]


def _holder() -> Holder:
    leaf = Leaf()
    return Holder(leaf, torch.nn.Linear(1, 1), torch.optim.SGD(leaf.parameters(), lr=0.1))


def test_the_state_has_flambe_metadata_per_component() -> None:
    state = _holder().get_state()
    assert list(state) == [
        "leaf.linear.weight",
        "leaf.linear.bias",
        "leaf.label",
        "plain.weight",
        "plain.bias",
        "extra",
    ]
    assert state._metadata["_flambe_directories"] == {"", "leaf"}
    assert state._metadata["keep_vars"] is False
    root, leaf = state._metadata[""], state._metadata["leaf"]
    assert (root["_flambe_class"], root["_flambe_version"], root["note"]) == (
        "Holder",
        "0.0.0",
        "custom",
    )
    assert (leaf["_flambe_class"], leaf["_flambe_version"]) == ("Leaf", "1.1.1")
    assert "class Leaf(Component" in leaf["_flambe_source"]
    assert leaf["version"] == 1  # torch's own metadata stays
    assert "_flambe_config" not in root  # built in Python, not from a config


def test_load_state_restores_everything_parents_first() -> None:
    source, target = _holder(), _holder()
    with torch.no_grad():
        source.leaf.linear.weight.fill_(2.0)
        source.plain.weight.fill_(5.0)
    source.leaf.label, source.extra = "changed", 9
    target.load_state(source.get_state())
    assert torch.equal(target.leaf.linear.weight, source.leaf.linear.weight)
    assert torch.equal(target.plain.weight, source.plain.weight)  # flambe forgot these
    assert (target.leaf.label, target.extra) == ("changed", 9)


def test_strict_loading_lists_missing_keys() -> None:
    state = _holder().get_state()
    del state["leaf.linear.bias"]
    _holder().load_state(state)  # flambe's default: not strict
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: leaf\.linear\.bias"):
        _holder().load_state(state, strict=True)


def test_shape_mismatches_raise() -> None:
    state = _holder().get_state()
    state["leaf.linear.weight"] = torch.zeros(3, 3)
    with pytest.raises(RuntimeError, match="size mismatch"):
        _holder().load_state(state)


def test_major_version_mismatches_raise_load_error() -> None:
    state = _holder().get_state()
    state._metadata["leaf"]["_flambe_version"] = "2.1.1"
    with pytest.raises(LoadError, match=r"node leaf: class Leaf is version 1\.1\.1"):
        _holder().load_state(state)


@pytest.mark.parametrize(
    "saved, current, refused",
    [
        ("1.0.0", "2.0.0", False),
        ("2.1.1", "1.1.1", True),
        ("1.2.3", "1.9.9", False),
        ("x", "1", False),
    ],
)
def test_flambe_version_rule(saved: str, current: str, refused: bool) -> None:
    assert (version_mismatch("C", saved, current) is not None) is refused


def test_register_attrs_needs_existing_attributes() -> None:
    with pytest.raises(AttributeError, match="has no attribute missing"):
        _holder().register_attrs("missing")


def test_compile_records_the_config() -> None:
    leaf = Leaf.compile(size=3)
    assert leaf._saved_kwargs == {"size": 3}
    config = leaf.get_state()._metadata[""]["_flambe_config"]
    assert config == "!component_tests.Leaf\nsize: 3\n"


def test_objects_that_yaml_cannot_hold_give_an_empty_config() -> None:
    holder = Holder.compile(leaf=Leaf(), plain=torch.nn.Linear(1, 1))
    assert holder.get_state()._metadata[""]["_flambe_config"] == ""

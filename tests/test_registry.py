"""The tag registry: flambe's namespaces, factories, bare pre-0.4.6 tags, torch's classes."""

from __future__ import annotations

import pytest
import torch

from flambe_compat import Component, LoadError, registrable_factory
from flambe_compat.registry import Registry, default_namespace, registry, torch_component


class Plain:
    pass


class Other:
    pass


def test_namespaces_follow_flambe() -> None:
    assert default_namespace(Plain) is None  # a module under tests: bare, as flambe's tests
    Plain.__module__ = "mypackage.models"
    try:
        assert default_namespace(Plain) == "mypackage"
        local = Registry()
        local.register(Plain)
        assert local.tag_of(Plain) == "!mypackage.Plain"
        local.register(Plain, "Renamed")
        assert local.tag_of(Plain) == "!mypackage.Renamed"  # the last tag is the dump's
        assert local.resolve("!mypackage.Plain").cls is Plain
    finally:
        Plain.__module__ = __name__


def test_components_register_themselves_with_factories() -> None:
    class Made(Component, tag_namespace="registry_tests"):
        @registrable_factory
        @classmethod
        def tiny(cls) -> Made:
            return cls()

    class Cousin(Component, tag_namespace="registry_tests"):
        pass

    assert registry.resolve("!registry_tests.Made").cls is Made
    resolved = registry.resolve("!registry_tests.Made.tiny")
    assert (resolved.cls, resolved.factory) == (Made, "tiny")
    assert isinstance(resolved.constructor(), Made)
    assert "tiny" not in Cousin._yaml_registered_factories
    with pytest.raises(LoadError, match="unknown tag"):
        registry.resolve("!registry_tests.Cousin.tiny")


def test_unregistered_components() -> None:
    class Hidden(Component, should_register=False):
        pass

    with pytest.raises(LoadError, match="has no registered tag"):
        registry.tag_of(Hidden)


def test_bare_tags_resolve_by_unique_class_name() -> None:
    local = Registry()
    local.register(Plain, "first.Plain")
    local.register(Other, "first.Other")
    assert local.resolve("!Plain").cls is Plain
    local.register(Other, "second.Plain")
    with pytest.raises(LoadError) as raised:
        local.resolve("!Plain")
    assert "!first.Plain, !second.Plain" in str(raised.value)
    assert local.lookup("!Plain") is None


def test_unknown_tags_say_how_to_register() -> None:
    with pytest.raises(LoadError, match=r"flambe_compat\.register\(cls, tag\)"):
        Registry().resolve("!nowhere.Thing")


@pytest.mark.parametrize(
    "name, base",
    [
        ("Linear", torch.nn.Linear),
        ("LSTM", torch.nn.LSTM),
        ("Adam", torch.optim.Adam),
        ("StepLR", torch.optim.lr_scheduler.StepLR),
    ],
)
def test_torch_classes_are_dynamic_components(name: str, base: type) -> None:
    cls = Registry().resolve(f"!torch.{name}").cls
    assert issubclass(cls, Component) and issubclass(cls, base)
    assert cls is torch_component(name) and cls.__name__ == name


@pytest.mark.parametrize("name", ["Quantize", "os", "Tensor", "load", "Module.compile"])
def test_other_torch_names_are_not_classes(name: str) -> None:
    with pytest.raises(LoadError, match="unknown tag"):
        Registry().resolve(f"!torch.{name}")


def test_torch_classes_can_be_left_out() -> None:
    with pytest.raises(LoadError):
        Registry(torch_classes=False).resolve("!torch.Linear")


def test_torch_components_build_from_keywords() -> None:
    linear = Registry().resolve("!torch.Linear").cls(in_features=2, out_features=3)
    assert linear.weight.shape == (3, 2)
    state = linear.get_state()
    assert state._metadata[""]["_flambe_class"] == "Linear"
    assert list(state) == ["weight", "bias"]

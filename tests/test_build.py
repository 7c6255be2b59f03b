"""Building a parsed config: flambe's order, links, stash, anchors, and refusals."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import pytest

from flambe_compat import LoadError
from flambe_compat.build import build
from flambe_compat.registry import Registry
from flambe_compat.yamlconfig import Spec, parse_config


class Node:
    built: ClassVar[list[str]] = []
    precompiled: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, name: str = "", child: Any = None, value: Any = None) -> None:
        self.name, self.child, self.value = name, child, value
        self._secret = "hidden"
        Node.built.append(name)

    @classmethod
    def precompile(cls, **kwargs: Any) -> None:
        cls.precompiled.append(kwargs)

    def greet(self) -> str:
        return f"hi {self.name}"

    @classmethod
    def named(cls, suffix: str) -> Node:
        return cls(name=f"made-{suffix}")


class Broken:
    def __init__(self, size: int = 1) -> None:
        raise ValueError(f"size {size} is wrong")


class Abstract(abc.ABC):
    @abc.abstractmethod
    def run(self) -> None: ...


REGISTRY = Registry(torch_classes=False)
REGISTRY.register(Node, "t.Node")
REGISTRY.register(Broken, "t.Broken")
REGISTRY.register(Abstract, "t.Abstract")
Node._yaml_registered_factories = {"named"}  # type: ignore[attr-defined]


def make(text: str, stash: dict[str, Any] | None = None, trusted: bool = False) -> Any:
    Node.built.clear()
    Node.precompiled.clear()
    return build(parse_config(text, REGISTRY).root, stash, trusted=trusted)


def test_keywords_are_built_depth_first_in_mapping_order() -> None:
    root = make(
        "!t.Node\nname: root\nchild: !t.Node\n  name: a\n  child: !t.Node {name: b}\n"
        "value: !t.Node {name: c}\n"
    )
    assert Node.built == ["b", "a", "c", "root"]
    assert root.child.child.name == "b"
    assert sorted(Node.precompiled[0]) == ["child", "name", "value"]  # the root, first


def test_the_config_is_recorded_with_defaults() -> None:
    root = make("!t.Node\nname: root\n")
    assert root._saved_kwargs == {"name": "root", "child": None, "value": None}
    assert root._created_with_tag == "!t.Node"


def test_factories() -> None:
    assert make("!t.Node.named\nsuffix: x\n").name == "made-x"


def test_anchors_build_one_object() -> None:
    root = make("!t.Node\nchild: &n !t.Node {name: shared}\nvalue: *n\n")
    assert root.child is root.value
    assert Node.built == ["shared", ""]


def test_links_see_objects_built_before_them() -> None:
    root = make("!t.Node\nchild: !t.Node {name: first}\nvalue: !@ child.name\n")
    assert root.value == "first"
    root = make("!t.Node\nchild: !t.Node\n  name: x\nvalue: !@ child[name]\n")
    assert root.value == "x"


def test_call_links_call_the_attribute() -> None:
    assert make("!t.Node\nchild: !t.Node {name: b}\nvalue: !call child.greet\n").value == "hi b"


def test_dotted_links_walk_unbuilt_arguments_as_0_4_3_did() -> None:
    root = make("!t.Node\nchild: !t.Node\n  name: inner\n  value: !@ child.name\n")
    assert root.child.value == "inner"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("!t.Node\nvalue: !@ child.name\nchild: !t.Node {}\n", "not built yet"),
        ("!t.Node\nchild: !t.Node\n  value: !@ child\n", "not built yet"),
        ("!t.Node\nvalue: !@ nothing.name\n", "no argument 'nothing'"),
        ("!t.Node\nchild: !t.Node {}\nvalue: !@ child.missing\n", "AttributeError"),
        ("!t.Node\nchild: !t.Node {}\nvalue: !@ child._secret\n", "private"),
        ("!t.Node\nchild: !t.Node {}\nvalue: !@ child.__class__\n", "private"),
        ("!t.Node\nvalue: !$ 7\n", "stash entry '7'"),
        ("!t.Broken\nsize: 3\n", "ValueError: size 3 is wrong"),
        ("!t.Node\nchild: !t.Broken {}\n", "config node child (!t.Broken, class Broken)"),
        ("!t.Node\nunknown: 1\n", "TypeError"),
        ("!t.Abstract {}", "abstract"),
        ("!t.Node\nvalue: !@ value\n", "leads back to itself"),
    ],
)
def test_bad_graphs_name_the_node(text: str, problem: str) -> None:
    with pytest.raises(LoadError) as raised:
        make(text)
    assert problem in str(raised.value)


def test_private_links_need_trust() -> None:
    assert make("!t.Node\nchild: !t.Node {}\nvalue: !@ child._secret\n", trusted=True).value == (
        "hidden"
    )


def test_stash_entries() -> None:
    marker = object()
    assert make("!t.Node\nvalue: !$ '0'\n", stash={"0": marker}).value is marker


def test_a_spec_containing_itself_is_refused() -> None:
    with pytest.raises(LoadError, match="contains itself"):
        make("&a !t.Node\nchild: *a\n")
    spec = Spec(REGISTRY.resolve("!t.Node"), {}, "")
    spec.keywords["child"] = spec  # built by hand: parsing refuses it before
    with pytest.raises(LoadError, match="contains itself"):
        build(spec)

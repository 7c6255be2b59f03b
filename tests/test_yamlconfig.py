"""Configs: flambe's YAML 1.2 reading, tags, links, stash, anchors, refusals, and round trips."""

from __future__ import annotations

import math
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flambe_compat import LoadError
from flambe_compat.registry import Registry, Resolved
from flambe_compat.yamlconfig import (
    MAX_DEPTH,
    LinkRef,
    Spec,
    StashRef,
    dump_config,
    parse_config,
    parse_link,
)


class Alpha:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class Beta(Alpha):
    pass


REGISTRY = Registry(torch_classes=False)
REGISTRY.register(Alpha, "t.Alpha")
REGISTRY.register(Beta, "t.Beta")


def parse(text: str) -> Any:
    return parse_config(text, REGISTRY).root


def test_scalars_are_yaml_1_2_as_flambe_read_them() -> None:
    root = parse("a: 1e-05\nb: yes\nc:\nd: 0o17\ne: on\nf: ~\ng: 1_000\nh: .inf\ni: 'x'\n")
    assert root == {
        "a": 1e-05,
        "b": "yes",
        "c": None,
        "d": 15,
        "e": "on",
        "f": None,
        "g": 1000,
        "h": math.inf,
        "i": "x",
    }


def test_tags_build_specs_with_keywords_in_order() -> None:
    root = parse("!t.Alpha\nz: 1\na: !t.Beta {}\nnothing: !t.Beta\n")
    assert isinstance(root, Spec) and root.tag == "!t.Alpha"
    assert list(root.keywords) == ["z", "a", "nothing"]
    assert root.keywords["a"].resolved == Resolved("!t.Beta", Beta)
    assert root.keywords["nothing"].keywords == {}


def test_extensions_come_first() -> None:
    config = parse_config("mine: mine-package>=1\n---\n!t.Alpha {}\n", REGISTRY)
    assert config.extensions == {"mine": "mine-package>=1"}
    assert isinstance(config.root, Spec)


def test_anchors_give_one_shared_value() -> None:
    root = parse("!t.Alpha\na: &x !t.Beta {k: [1]}\nb: *x\nc: &l [1, 2]\nd: *l\n")
    assert root.keywords["a"] is root.keywords["b"]
    assert root.keywords["c"] is root.keywords["d"]


def test_merge_keys() -> None:
    assert parse("base: &b {x: 1, y: 2}\nnew:\n  <<: *b\n  y: 3\n")["new"] == {"x": 1, "y": 3}


def test_links_and_stash_entries() -> None:
    root = parse(
        "!t.Alpha\na: !@ model[encoder].rnn.size\nb: !link model.x\nc: !$ 0\nd: !call m.f\n"
    )
    a, b, c, d = root.keywords.values()
    assert (a.schematic, a.attrs, a.text) == (
        ["model", "encoder"],
        ["rnn", "size"],
        "model[encoder].rnn.size",
    )
    assert (b.schematic, b.attrs, b.tag) == (["model"], ["x"], "!link")
    assert isinstance(c, StashRef) and c.key == "0"
    assert isinstance(d, LinkRef) and d.call


@pytest.mark.parametrize("text", ["", "a[b", "a]b", "[a]", "a[b]c", "a[b].", "a..b", "a[]"])
def test_malformed_links_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="malformed link"):
        parse_link(text)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("!os.system {}", "unknown tag !os.system"),
        ("!!python/object/apply:os.system ['ls']", "tag !!python/object/apply:os.system"),
        ("a: !!python/name:os.system ''", "tag !!python/name:os.system"),
        ("a: !!set {x}", "tag !!set"),
        ("!t.Alpha [1, 2]", "takes a mapping of keyword arguments, not a sequence"),
        ("!t.Alpha 5", "not a scalar"),
        ("!t.Alpha\n1: x\n", "argument name 1 is not a string"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("a: !@ [x]", "!@ takes a scalar"),
        ("a: !@ 'x[y'", "malformed link"),
        ("a: [1", "not valid YAML"),
        ("--- 1\n--- 2\n--- 3\n", "3 documents"),
        ("", "config is empty"),
        ("[1]\n---\n!t.Alpha {}\n", "extensions section is not a mapping"),
    ],
)
def test_bad_configs_name_the_node(text: str, problem: str) -> None:
    with pytest.raises(LoadError) as raised:
        parse(text)
    assert problem in str(raised.value)


def test_errors_name_the_node_path_and_line() -> None:
    with pytest.raises(
        LoadError, match=r"config node model\.inner \(line 3\): unknown tag !no\.Such"
    ):
        parse("!t.Alpha\nmodel: !t.Beta\n  inner: !no.Such {}\n")


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(LoadError, match="alias bomb"):
        parse("\n".join(lines))


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(LoadError, match=f"deeper than {MAX_DEPTH}"):
        parse("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    nested = parse("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    for _ in range(MAX_DEPTH - 1):
        (nested,) = nested
    assert nested == []


def test_oversize_configs_are_refused() -> None:
    with pytest.raises(LoadError, match="larger than"):
        parse("a: '" + "x" * (1 << 20) + "'")


def test_a_node_inside_itself_is_refused() -> None:
    with pytest.raises(LoadError, match="contains itself"):
        parse("&a [*a]")


# round trips

_NAMES = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=6)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=8)
)
_LINKS = st.builds(
    lambda tag, schematic, attrs: LinkRef(tag, schematic, attrs, ""),
    st.sampled_from(["!@", "!link", "!call"]),
    st.lists(_NAMES, min_size=1, max_size=3),
    st.lists(_NAMES, max_size=2),
)
_RESOLVED = [REGISTRY.resolve("!t.Alpha"), REGISTRY.resolve("!t.Beta")]


def _specs(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Spec]:
    return st.builds(
        lambda resolved, keywords: Spec(resolved, keywords, ""),
        st.sampled_from(_RESOLVED),
        st.dictionaries(_NAMES, children, max_size=3),
    )


_TREES = st.recursive(
    _SCALARS | _LINKS | st.builds(lambda key: StashRef(key, ""), st.sampled_from(["0", "1"])),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.integers(), children, max_size=3)
        | _specs(children)
    ),
    max_leaves=12,
)
_ROOTS = st.builds(
    lambda shared, other, resolved: Spec(resolved, {"a": shared, "b": other, "c": shared}, ""),
    _TREES,
    _TREES,
    st.sampled_from(_RESOLVED),
)


def _same(original: Any, parsed: Any, seen: dict[int, Any]) -> bool:
    if isinstance(original, list | dict | Spec) and id(original) in seen:
        return seen[id(original)] is parsed
    if isinstance(original, list | dict | Spec):
        seen[id(original)] = parsed
    if isinstance(original, Spec):
        return (
            isinstance(parsed, Spec)
            and parsed.tag == original.tag
            and _same(original.keywords, parsed.keywords, seen)
        )
    if isinstance(original, LinkRef):
        return isinstance(parsed, LinkRef) and (parsed.tag, parsed.schematic, parsed.attrs) == (
            original.tag,
            original.schematic,
            original.attrs,
        )
    if isinstance(original, StashRef):
        return isinstance(parsed, StashRef) and parsed.key == original.key
    if isinstance(original, dict):
        return (
            isinstance(parsed, dict)
            and list(parsed) == list(original)
            and all(_same(v, parsed[k], seen) for k, v in original.items())
        )
    if isinstance(original, list):
        return (
            isinstance(parsed, list)
            and len(parsed) == len(original)
            and all(_same(a, b, seen) for a, b in zip(original, parsed, strict=True))
        )
    return type(parsed) is type(original) and parsed == original


@given(_ROOTS, st.dictionaries(_NAMES, st.text(min_size=1, max_size=8), max_size=2))
def test_configs_round_trip_through_dump_and_parse(root: Spec, extensions: dict[str, str]) -> None:
    text = dump_config(root, extensions)
    config = parse_config(text, REGISTRY)
    assert config.extensions == extensions
    assert _same(root, config.root, {}), text

"""flambe's YAML configs, parsed into unbuilt specs and dumped back, as flambe's ruamel did.

A config is an optional extensions mapping (module -> pip requirement) then the object.
Scalars follow YAML 1.2 (`1e-05` is a float, `yes` a string, an empty value null);
anchors give one shared value; tags name registered classes (`!pkg.Class`,
`!Class.factory`), links (`!@ model[encoder].rnn`, `!link`, `!call`, old dotted
`!@ model.encoder`) and stash entries (`!$ 0`). Nothing else is constructed: every other
tag, `!!python/...` included, is a `LoadError` naming the node.

>>> from flambe_compat.registry import Registry
>>> class Linear:
...     def __init__(self, size=1):
...         self.size = size
>>> registry = Registry(); _ = registry.register(Linear, "mine.Linear")
>>> config = parse_config("!mine.Linear\\nsize: 1e-05\\n", registry)
>>> config.root.tag, config.root.keywords
('!mine.Linear', {'size': 1e-05})
>>> parse_config("!!python/object:os.system {}", registry)
Traceback (most recent call last):
...
flambe_compat.errors.LoadError: config node (root) (line 1): tag !!python/object:os.system ...
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml as libyaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.representer import RepresenterError, SafeRepresenter

from .config import MAX_CONFIG_CHARACTERS
from .errors import LoadError
from .registry import Registry, Resolved

MAX_NODES = 100_000
"""Nodes in a config with every alias expanded: more is refused (alias bombs)."""
MAX_DEPTH = 100
"""Nesting of collections in a config."""

LINK_TAGS = frozenset({"!@", "!link"})
CALL_TAG = "!call"
STASH_TAG = "!$"
_STANDARD = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(
    _STANDARD + name for name in ("str", "int", "float", "bool", "null", "binary", "timestamp")
)
_MERGE_TAG = _STANDARD + "merge"
_PLAIN_TAGS = _SCALAR_TAGS | {_STANDARD + "map", _STANDARD + "seq", _MERGE_TAG}
_IN_PROGRESS = -1
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_LibyamlLoader = getattr(libyaml, "CSafeLoader", libyaml.SafeLoader)


@dataclass(eq=False)
class Spec:
    """An object to build: what its tag resolved to, and its keyword arguments."""

    resolved: Resolved
    keywords: dict[str, Any]
    path: str

    @property
    def tag(self) -> str:
        return self.resolved.tag


@dataclass(eq=False)
class LinkRef:
    """A link: keyword names from the root (`schematic`), then attributes (`attrs`)."""

    tag: str
    schematic: list[str]
    attrs: list[str]
    path: str
    call: bool = False
    resolved: bool = field(default=False, repr=False)
    target: Any = field(default=None, repr=False)
    """The built object the keyword path ends at (attributes are read from it)."""
    value: Any = field(default=None, repr=False)

    @property
    def text(self) -> str:
        return link_text(self.schematic, self.attrs)


@dataclass(eq=False)
class StashRef:
    """`!$ key`: the value the root's `_flambe_stash` holds under `key`."""

    key: str
    path: str
    resolved: bool = field(default=False, repr=False)
    value: Any = field(default=None, repr=False)


@dataclass
class Config:
    """A parsed config: extensions (module -> requirement) and the root value."""

    extensions: dict[str, str]
    root: Any


def link_text(schematic: list[str], attrs: list[str]) -> str:
    """`model[encoder].rnn`: flambe's text of a link (`create_link_str`)."""
    head, *rest = schematic
    return head + "".join(f"[{name}]" for name in rest) + "".join(f".{a}" for a in attrs)


def parse_link(text: str) -> tuple[list[str], list[str]]:
    """`a[b][c].x.y` -> (['a', 'b', 'c'], ['x', 'y']); dotted `a.x.y` -> (['a'], ['x', 'y']).

    `ValueError` for a malformed link, as flambe's `parse_link_str` refused them.
    """
    head, bracket, rest = text.partition("[")
    if not head or "]" in head:
        raise ValueError(f"malformed link {text!r}: no top-level name")
    if not bracket:
        first, *attrs = head.split(".")
        if not first or any(not a for a in attrs):
            raise ValueError(f"malformed link {text!r}: empty name")
        return [first], attrs
    schematic = [head]
    while True:
        name, closed, rest = rest.partition("]")
        if not closed or "[" in name or not name:
            raise ValueError(f"malformed link {text!r}: unbalanced brackets")
        schematic.append(name)
        if rest.startswith("["):
            rest = rest[1:]
            continue
        break
    if not rest:
        return schematic, []
    if not rest.startswith(".") or "[" in rest or "]" in rest:
        raise ValueError(f"malformed link {text!r}: attributes must follow a dot")
    attrs = rest[1:].split(".")
    if any(not a for a in attrs):
        raise ValueError(f"malformed link {text!r}: empty attribute")
    return schematic, attrs


def parse_config(
    text: str,
    registry: Registry,
    on_extensions: Callable[[dict[str, str]], None] | None = None,
) -> Config:
    """Parse a config's text; every problem is a `LoadError` naming the node and line.

    `on_extensions` sees the extensions section before any tag is resolved (so that the
    caller can import the modules that register them).
    """
    if len(text) > MAX_CONFIG_CHARACTERS:
        raise LoadError(f"config larger than {MAX_CONFIG_CHARACTERS} characters, not read")
    _check_depth(text)
    try:
        documents = list(YAML(typ="safe", pure=True).compose_all(text))
    except (YAMLError, RecursionError) as error:
        raise LoadError(f"config is not valid YAML: {' '.join(str(error).split())}") from None
    documents = [d for d in documents if d is not None]
    if not documents:
        raise LoadError("config is empty: the object was not built from a config, nothing to load")
    if len(documents) > 2:
        raise LoadError(
            f"config holds {len(documents)} documents; flambe writes an optional extensions "
            "section and the object"
        )
    extensions: dict[str, str] = {}
    builder = _Builder(registry)
    if len(documents) == 2:
        raw = _Builder(Registry(torch_classes=False)).build(documents[0], "(extensions)")
        if raw is not None:
            if not isinstance(raw, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
            ):
                raise LoadError("config extensions section is not a mapping of module to package")
            extensions = dict(raw)
    if on_extensions is not None:
        on_extensions(extensions)
    root = builder.build(documents[-1], "")
    return Config(extensions, root)


@dataclass(frozen=True)
class TaggedNode:
    """A tag in a config: where it is, and what it names (None when the registry lacks it)."""

    path: str
    line: int
    tag: str
    resolved: Resolved | None


def tagged_nodes(text: str, registry: Registry) -> list[TaggedNode]:
    """Every tag of a config's object document, resolved or not, without building anything.

    Links (`!@`, `!link`, `!call`) and stash entries (`!$`) are listed as resolved to
    nothing but are not missing; an alias is listed once, where its anchor is.
    """
    if len(text) > MAX_CONFIG_CHARACTERS:
        raise LoadError(f"config larger than {MAX_CONFIG_CHARACTERS} characters, not read")
    _check_depth(text)
    try:
        documents = [d for d in YAML(typ="safe", pure=True).compose_all(text) if d is not None]
    except (YAMLError, RecursionError) as error:
        raise LoadError(f"config is not valid YAML: {' '.join(str(error).split())}") from None
    if not documents:
        return []
    found: list[TaggedNode] = []
    seen: set[int] = set()
    pending: list[tuple[Node, str]] = [(documents[-1], "")]
    while pending:
        node, path = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        tag = _tag(node)
        if tag not in _PLAIN_TAGS:
            resolved = None if is_reference(tag) else registry.lookup(tag)
            shown = "!!" + tag[len(_STANDARD) :] if tag.startswith(_STANDARD) else tag
            found.append(TaggedNode(path, node.start_mark.line + 1, shown, resolved))
        if isinstance(node, SequenceNode):
            pending.extend((c, f"{path}[{i}]") for i, c in reversed(list(enumerate(node.value))))
        elif isinstance(node, MappingNode):
            for key, value in reversed(node.value):
                name = str(key.value) if isinstance(key, ScalarNode) else "?"
                pending.append((value, f"{path}.{name}" if path else name))
    return found


def is_reference(tag: str) -> bool:
    """Whether `tag` is a link or a stash entry rather than a class."""
    return tag in LINK_TAGS or tag in (CALL_TAG, STASH_TAG)


def _check_depth(text: str) -> None:
    """Refuse deep nesting from parser events before ruamel's recursive composer sees it."""
    depth = 0
    try:
        for event in libyaml.parse(text, Loader=_LibyamlLoader):
            if isinstance(event, libyaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else "?"
                    raise LoadError(f"config nested deeper than {MAX_DEPTH} levels (line {line})")
            elif isinstance(event, libyaml.CollectionEndEvent):
                depth -= 1
    except libyaml.YAMLError as error:
        raise LoadError(f"config is not valid YAML: {' '.join(str(error).split())}") from None


def _tag(node: Node) -> str:
    tag = node.tag
    return tag if isinstance(tag, str) else str(getattr(tag, "value", tag))


def _where(node: Node, path: str) -> str:
    return f"config node {path or '(root)'} (line {node.start_mark.line + 1})"


class _Builder:
    """Nodes to values; a node reached twice (an alias) gives the same value."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._values: dict[int, Any] = {}
        self._sizes: dict[int, int] = {}
        self._scalars = YAML(typ="safe", pure=True).constructor

    def build(self, node: Node, path: str) -> Any:
        if self._size(node) > MAX_NODES:
            raise LoadError(
                f"{_where(node, path)}: more than {MAX_NODES} nodes with aliases expanded "
                "(an alias bomb?)"
            )
        return self._value(node, path)

    def _size(self, node: Node) -> int:
        """Nodes under `node` with aliases expanded, memoized per node (capped)."""
        known = self._sizes.get(id(node))
        if known == _IN_PROGRESS:
            raise LoadError(f"{_where(node, '')}: a node contains itself (a recursive alias)")
        if known is not None:
            return known
        self._sizes[id(node)] = _IN_PROGRESS
        total = 1
        for child in _children(node):
            total += self._size(child)
            if total > MAX_NODES:
                break
        self._sizes[id(node)] = total
        return total

    def _value(self, node: Node, path: str) -> Any:
        if id(node) in self._values:
            return self._values[id(node)]
        tag = _tag(node)
        if tag.startswith("!") and not tag.startswith("!!"):
            return self._tagged(node, tag, path)
        if isinstance(node, ScalarNode):
            if tag not in _SCALAR_TAGS:
                raise self._refused(node, tag, path)
            return self._scalar(node, path)
        if isinstance(node, SequenceNode):
            if tag != _STANDARD + "seq":
                raise self._refused(node, tag, path)
            items: list[Any] = []
            self._values[id(node)] = items
            items.extend(self._value(c, f"{path}[{i}]") for i, c in enumerate(node.value))
            return items
        if tag != _STANDARD + "map":
            raise self._refused(node, tag, path)
        assert isinstance(node, MappingNode)
        mapping: dict[Any, Any] = {}
        self._values[id(node)] = mapping
        mapping.update(self._mapping(node, path))
        return mapping

    def _refused(self, node: Node, tag: str, path: str) -> LoadError:
        shown = "!!" + tag[len(_STANDARD) :] if tag.startswith(_STANDARD) else tag
        return LoadError(f"{_where(node, path)}: tag {shown} is not allowed in a flambe config")

    def _scalar(self, node: ScalarNode, path: str) -> Any:
        try:
            return self._scalars.construct_object(node, deep=True)
        except (YAMLError, ValueError, TypeError, OverflowError) as error:
            raise LoadError(f"{_where(node, path)}: {' '.join(str(error).split())}") from None

    def _mapping(self, node: MappingNode, path: str) -> dict[Any, Any]:
        merged: dict[Any, Any] = {}
        own: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if _tag(key_node) == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    value = self._value(source, path)
                    if not isinstance(value, dict):
                        raise LoadError(f"{_where(source, path)}: only mappings can be merged")
                    merged.update(value)
                continue
            if not isinstance(key_node, ScalarNode):
                raise LoadError(f"{_where(key_node, path)}: a mapping key must be a scalar")
            key = self._value(key_node, path)
            if key in own:
                raise LoadError(f"{_where(key_node, path)}: duplicate key {key!r}")
            try:
                own[key] = self._value(value_node, f"{path}.{key}" if path else str(key))
            except TypeError:
                raise LoadError(f"{_where(key_node, path)}: unhashable key") from None
        merged.update(own)
        return merged

    def _tagged(self, node: Node, tag: str, path: str) -> Any:
        if tag in LINK_TAGS or tag == CALL_TAG:
            text = self._tag_scalar(node, tag, path)
            try:
                schematic, attrs = parse_link(text)
            except ValueError as error:
                raise LoadError(f"{_where(node, path)}: {error}") from None
            link = LinkRef(tag, schematic, attrs, path, call=tag == CALL_TAG)
            self._values[id(node)] = link
            return link
        if tag == STASH_TAG:
            stash = StashRef(self._tag_scalar(node, tag, path), path)
            self._values[id(node)] = stash
            return stash
        try:
            resolved = self.registry.resolve(tag)
        except LoadError as error:
            raise LoadError(f"{_where(node, path)}: {error}") from None
        spec = Spec(resolved, {}, path)
        self._values[id(node)] = spec
        if isinstance(node, MappingNode):
            for key, value in self._mapping(node, path).items():
                if not isinstance(key, str):
                    raise LoadError(f"{_where(node, path)}: argument name {key!r} is not a string")
                spec.keywords[key] = value
        elif not isinstance(node, ScalarNode) or node.value not in _NULLS:
            raise LoadError(
                f"{_where(node, path)}: {tag} takes a mapping of keyword arguments, "
                f"not a {'sequence' if isinstance(node, SequenceNode) else 'scalar'}"
            )
        return spec

    def _tag_scalar(self, node: Node, tag: str, path: str) -> str:
        if not isinstance(node, ScalarNode):
            raise LoadError(f"{_where(node, path)}: {tag} takes a scalar")
        return str(node.value)


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value


# dumping


class _Representer(SafeRepresenter):
    """Specs, built objects, links and stash entries as flambe wrote them."""

    root: Any = None
    stash: dict[str, Any]


def _represent_spec(representer: _Representer, spec: Spec) -> Any:
    return representer.represent_mapping(spec.tag, spec.keywords)


def _represent_link(representer: _Representer, link: LinkRef) -> Any:
    if representer.root is None or not link.resolved:
        return representer.represent_scalar(link.tag, link.text)
    path = _path_to(representer.root, link.target, set())
    if path:
        return representer.represent_scalar(link.tag, link_text(path, link.attrs))
    value = link.value
    if hasattr(value, "_saved_kwargs"):
        return _represent_object(representer, value)
    try:
        return representer.represent_data(value)
    except RepresenterError:
        return _represent_stashed(representer, value)


def _represent_stash(representer: _Representer, ref: StashRef) -> Any:
    if representer.root is None or not ref.resolved:
        return representer.represent_scalar(STASH_TAG, ref.key)
    return _represent_stashed(representer, ref.value)


def _represent_stashed(representer: _Representer, value: Any) -> Any:
    key = str(len(representer.stash))
    representer.stash[key] = value
    return representer.represent_scalar(STASH_TAG, key)


def _represent_object(representer: _Representer, obj: Any) -> Any:
    from .registry import registry

    saved = obj.__dict__.get("_saved_kwargs")
    if saved is None:
        raise RepresenterError(f"{type(obj).__name__} object was not built from a config")
    tag = obj.__dict__.get("_created_with_tag") or registry.tag_of(type(obj))
    return representer.represent_mapping(tag, saved)


_BREAKS = frozenset("\r\x85\u2028\u2029")


def _represent_str(representer: _Representer, value: str) -> Any:
    """Double-quoted (escaped) when the text holds a line break other than `\\n`, which
    single-quoted and plain scalars would fold into a space."""
    if _BREAKS.intersection(value):
        return representer.represent_scalar(_STANDARD + "str", value, style='"')
    return representer.represent_str(value)


def _represent_sequence(representer: _Representer, value: list[Any] | tuple[Any, ...]) -> Any:
    """Lists of scalars in flow style (`sizes: [3, 3]`), as flambe's configs show them."""
    flow = all(isinstance(item, str | int | float | None) for item in value)
    return representer.represent_sequence(_STANDARD + "seq", list(value), flow_style=flow)


def _path_to(root: Any, target: Any, seen: set[int]) -> list[str] | None:
    """Keyword names from `root` down to `target` through built Components, or None."""
    if id(root) in seen:
        return None
    seen.add(id(root))
    saved = getattr(root, "__dict__", {}).get("_saved_kwargs")
    if not isinstance(saved, Mapping):
        return None
    for key, value in saved.items():
        if value is target:
            return [str(key)]
        below = _path_to(value, target, seen)
        if below is not None:
            return [str(key), *below]
    return None


_Representer.add_representer(Spec, _represent_spec)
_Representer.add_representer(LinkRef, _represent_link)
_Representer.add_representer(StashRef, _represent_stash)
_Representer.add_representer(tuple, _represent_sequence)
_Representer.add_representer(list, _represent_sequence)
_Representer.add_representer(str, _represent_str)
_Representer.add_multi_representer(object, lambda r, o: _represent_object(r, o))


def _dumper(root: Any) -> tuple[YAML, _Representer]:
    dumper = YAML(typ="safe", pure=True)
    dumper.Representer = _Representer
    dumper.default_flow_style = False
    representer = dumper.representer
    assert isinstance(representer, _Representer)
    representer.sort_base_mapping_type_on_output = False
    representer.root = root
    representer.stash = {}
    return dumper, representer


def dump_config(root: Any, extensions: Mapping[str, str] | None = None) -> str:
    """The text of a config holding `root` (specs, links, plain values), extensions first."""
    dumper, _ = _dumper(None)
    stream = io.StringIO()
    documents: list[Any] = [dict(extensions), root] if extensions else [root]
    dumper.dump_all(documents, stream)
    return stream.getvalue()


def dump_object(obj: Any) -> tuple[str, dict[str, Any]]:
    """A built object's config and stash, as `get_state` records them.

    Links to objects outside `obj` become their values (stashed when YAML cannot hold
    them). An object that cannot be represented gets an empty config, as in flambe.
    """
    dumper, representer = _dumper(obj)
    stream = io.StringIO()
    extensions = aggregate_extensions(obj)
    try:
        dumper.dump_all([extensions, obj] if extensions else [obj], stream)
    except (RepresenterError, LoadError, YAMLError):
        return "", {}
    return stream.getvalue(), representer.stash


def aggregate_extensions(obj: Any) -> dict[str, str]:
    """The extensions of `obj` and of the built objects its config holds."""
    found: dict[str, str] = {}
    seen: set[int] = set()

    def visit(value: Any) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        own = getattr(value, "__dict__", {}) if not isinstance(value, type) else {}
        if "_saved_kwargs" in own:
            found.update(own.get("_extensions") or {})
            visit(own["_saved_kwargs"])
        elif isinstance(value, Mapping):
            for item in value.values():
                visit(item)
        elif isinstance(value, list | tuple):
            for item in value:
                visit(item)

    visit(obj)
    return found

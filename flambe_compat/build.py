"""Build the object graph a parsed config describes, in flambe's order.

For each spec: the class's `precompile` hook, then its keyword values depth-first in
mapping order (a link sees only objects already built: earlier in the config, never a
parent), then the class or factory. A spec reached twice (a YAML alias) is one object.
Each built object records its config (`_saved_kwargs`, with every default filled in),
so that `get_state` writes a config that rebuilds it.

>>> from flambe_compat.registry import Registry
>>> from flambe_compat.yamlconfig import parse_config
>>> class Pair:
...     def __init__(self, left=None, right=None):
...         self.left, self.right = left, right
>>> registry = Registry(); _ = registry.register(Pair, "mine.Pair")
>>> config = parse_config("!mine.Pair\\nleft: &a !mine.Pair {}\\nright: *a\\n", registry)
>>> pair = build(config.root)
>>> pair.left is pair.right, pair.left.right
(True, None)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .errors import LoadError
from .registry import Resolved
from .yamlconfig import LinkRef, Spec, StashRef

__all__ = ["build", "compile_class"]

_BUILDING = object()
_UNBUILT = (None, _BUILDING)


class _Graph:
    """One build: specs to objects, the root spec links start from, the stash."""

    def __init__(
        self,
        root: Any,
        stash: Mapping[str, Any],
        extensions: Mapping[str, str],
        trusted: bool,
    ) -> None:
        self.root = root
        self.stash = stash
        self.extensions = dict(extensions)
        self.trusted = trusted
        self.built: dict[int, Any] = {}
        self.following: set[int] = set()

    def value(self, value: Any) -> Any:
        if isinstance(value, Spec):
            return self.spec(value)
        if isinstance(value, LinkRef):
            return self.link(value)
        if isinstance(value, StashRef):
            return self.stashed(value)
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        if isinstance(value, Mapping):
            return {key: self.value(item) for key, item in value.items()}
        return value

    def spec(self, spec: Spec) -> Any:
        done = self.built.get(id(spec))
        if done is _BUILDING:
            raise LoadError(f"config node {spec.path or '(root)'}: {spec.tag} contains itself")
        if done is not None:
            return done
        self.built[id(spec)] = _BUILDING
        instance = construct(spec.resolved, spec.keywords, self, spec.path)
        self.built[id(spec)] = instance
        instance_dict = getattr(instance, "__dict__", None)
        if isinstance(instance_dict, dict):
            instance_dict["_schema"] = spec
            instance_dict["_created_with_tag"] = spec.tag
        return instance

    def link(self, link: LinkRef) -> Any:
        where = f"config node {link.path or '(root)'}: link {link.text}"
        if link.resolved:
            return link.value
        if id(link) in self.following:
            raise LoadError(f"{where}: the link leads back to itself")
        self.following.add(id(link))
        try:
            return self._follow(link, where)
        finally:
            self.following.discard(id(link))

    def _follow(self, link: LinkRef, where: str) -> Any:
        if not isinstance(self.root, Spec):
            raise LoadError(f"{where}: the config's root is not an object")
        current: Any = self.root
        names = list(link.schematic)
        for name in names:
            if not isinstance(current, Spec) or name not in current.keywords:
                raise LoadError(f"{where}: no argument {name!r} to follow")
            current = current.keywords[name]
            if isinstance(current, LinkRef):
                current = self.link(current)
        attrs = list(link.attrs)
        while attrs and isinstance(current, Spec) and self.built.get(id(current)) in _UNBUILT:
            # flambe 0.4.3's dotted links walked unbuilt arguments before attributes
            name = attrs.pop(0)
            if name not in current.keywords:
                raise LoadError(
                    f"{where}: its target is not built yet and has no argument {name!r} (a "
                    "link sees only objects earlier in the config, never a parent)"
                )
            current = current.keywords[name]
        if isinstance(current, Spec):
            target = self.built.get(id(current))
            if target is None or target is _BUILDING:
                raise LoadError(
                    f"{where}: its target is not built yet (a link sees only objects earlier "
                    "in the config, never a parent)"
                )
            current = target
        target_object = current
        for attr in attrs:
            if attr.startswith("_") and not self.trusted:
                raise LoadError(
                    f"{where}: attribute {attr!r} is private; links into private or dunder "
                    "attributes need trusted=True"
                )
            try:
                current = getattr(current, attr)
            except Exception as error:
                raise LoadError(f"{where}: {type(error).__name__}: {error}") from None
        if link.call:
            try:
                current = current()
            except Exception as error:
                raise LoadError(
                    f"{where}: calling it raised {type(error).__name__}: {error}"
                ) from None
        link.target, link.value, link.resolved = target_object, current, True
        return current

    def stashed(self, ref: StashRef) -> Any:
        if ref.key not in self.stash:
            raise LoadError(
                f"config node {ref.path or '(root)'}: stash entry {ref.key!r} is not in the "
                "root's _flambe_stash"
            )
        ref.value, ref.resolved = self.stash[ref.key], True
        return ref.value


def construct(resolved: Resolved, keywords: Mapping[str, Any], graph: _Graph, path: str) -> Any:
    """`precompile`, the keyword values, then the class or factory; errors name the node."""
    where = f"config node {path or '(root)'} ({resolved.tag}, class {resolved.cls.__name__})"
    if inspect.isabstract(resolved.cls):
        raise LoadError(f"{where}: the class is abstract")
    precompile = getattr(resolved.cls, "precompile", None)
    if callable(precompile):
        try:
            precompile(**keywords)
        except Exception as error:
            raise LoadError(f"{where}: precompile raised {type(error).__name__}: {error}") from None
    arguments = {key: graph.value(value) for key, value in keywords.items()}
    constructor = resolved.constructor
    try:
        instance = constructor(**arguments)
    except LoadError:
        raise
    except Exception as error:
        raise LoadError(
            f"{where}: building it raised {type(error).__name__}: {error}; check the "
            "arguments against the class's signature"
        ) from None
    saved = {
        key: value if isinstance(value, LinkRef | StashRef) else arguments[key]
        for key, value in keywords.items()
    }
    instance_dict = getattr(instance, "__dict__", None)
    if isinstance(instance_dict, dict):
        instance_dict["_saved_kwargs"] = _with_defaults(saved, constructor)
        instance_dict["_extensions"] = _own_extensions(resolved.cls, graph.extensions)
    return instance


def _with_defaults(saved: dict[str, Any], constructor: Callable[..., Any]) -> dict[str, Any]:
    """flambe recorded every default argument too, for reproducibility."""
    try:
        parameters = inspect.signature(constructor).parameters
    except (TypeError, ValueError):
        return saved
    filled = dict(saved)
    for name, parameter in parameters.items():
        if name == "self" or name in filled or parameter.default is inspect.Parameter.empty:
            continue
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            filled[name] = parameter.default
    return filled


def _own_extensions(cls: type, extensions: Mapping[str, str]) -> dict[str, str]:
    top = cls.__module__.split(".")[0]
    return {top: extensions[top]} if top in extensions else {}


def build(
    root: Any,
    stash: Mapping[str, Any] | None = None,
    extensions: Mapping[str, str] | None = None,
    *,
    trusted: bool = False,
) -> Any:
    """The object `root` (a parsed config's root) describes, with `stash` for `!$` entries."""
    return _Graph(root, stash or {}, extensions or {}, trusted).value(root)


def compile_class(
    cls: type,
    factory: str | None,
    keywords: Mapping[str, Any],
    stash: Mapping[str, Any],
    extensions: Mapping[str, str] | None,
) -> Any:
    """`Component.compile`: build `cls` from keywords that may hold specs and links."""
    from .registry import registry

    try:
        tag = registry.tag_of(cls, factory)
    except LoadError:
        tag = f"!{cls.__name__}"
    resolved = Resolved(tag, cls, factory)
    spec = Spec(resolved, dict(keywords), "")
    graph = _Graph(spec, stash, extensions or {}, trusted=True)
    instance = construct(resolved, spec.keywords, graph, "")
    instance_dict = getattr(instance, "__dict__", None)
    if isinstance(instance_dict, dict):
        instance_dict["_schema"] = spec
        instance_dict["_created_with_tag"] = tag
    return instance

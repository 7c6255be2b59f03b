"""The tag registry: which class (or factory) a config tag like `!sample_models.MLP` names.

flambe registered every `Component` subclass under `!<top-level module>.<Class>` (its own
classes, and from 0.4.3 to 0.4.5 the user's too, as a bare `!<Class>`), factories as
`!<tag>.<factory>`, and torch's modules, optimizers and LR schedulers as `!torch.<Class>`.
A `Registry` holds the same mapping; nothing outside it is ever resolved:

>>> registry = Registry()
>>> class Point:
...     def __init__(self, x=0):
...         self.x = x
>>> registry.register(Point, "mymodule.Point")
<class 'flambe_compat.registry.Point'>
>>> registry.resolve("!mymodule.Point").cls.__name__
'Point'
>>> registry.resolve("!Point").cls is Point      # a pre-0.4.6 bare tag: unique by name
True
>>> registry.resolve("!os.system")
Traceback (most recent call last):
...
flambe_compat.errors.LoadError: unknown tag !os.system: no registered class has it ...
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import LoadError

T = TypeVar("T", bound=type)

TORCH_NAMESPACE = "torch"
_UNNAMESPACED_MODULES = frozenset({"flambe", "flambe_compat", "tests"})
"""Top-level modules whose classes get bare tags, as flambe's own (and its tests') did."""
_TORCH_EXCLUDED = ("torch.nn.quantized", "torch.nn.qat", "torch.ao.")
_BUILTINS_PACKAGE = "flambe_compat.builtins"


@dataclass(frozen=True)
class Resolved:
    """What a tag names: a class, and the factory method to call instead of the class."""

    tag: str
    cls: type
    factory: str | None = None

    @property
    def constructor(self) -> Callable[..., Any]:
        """The callable that builds the object from keyword arguments."""
        if self.factory is None:
            return self.cls
        constructor: Callable[..., Any] = getattr(self.cls, self.factory)
        return constructor


def factories_of(cls: type) -> frozenset[str]:
    """The names of `cls`'s registrable factories (`!Class.factory` tags)."""
    return frozenset(getattr(cls, "_yaml_registered_factories", ()))


def default_namespace(cls: type) -> str | None:
    """flambe's namespace for a class: its top-level module, none for flambe's own."""
    top = cls.__module__.split(".")[0]
    return None if top in _UNNAMESPACED_MODULES else top


class Registry:
    """Tags to classes. `register` adds one; `resolve` answers or raises `LoadError`.

    `torch_classes=True` also resolves `!torch.<Class>` for torch's modules (except
    quantized and QAT ones), optimizers and LR schedulers, as flambe registered them:
    dynamic Component subclasses built from keyword arguments.
    """

    def __init__(self, *, torch_classes: bool = True) -> None:
        self._tags: dict[str, type] = {}
        self._default_tags: dict[type, str] = {}
        self._torch_classes = torch_classes
        self._lock = threading.RLock()

    def register(self, cls: T, tag: str | None = None, *, namespace: str | None = None) -> T:
        """Register `cls` under `tag` (default: its name) in `namespace` (default: flambe's).

        `tag` may already hold a namespace (`"mypackage.MyClass"`) or a leading `!`. The
        last tag registered for a class is the one dumps use, as in flambe.
        """
        name = (tag or cls.__name__).lstrip("!")
        if tag is None or "." not in name:
            namespace = namespace if namespace is not None else default_namespace(cls)
            name = f"{namespace}.{name}" if namespace else name
        full = f"!{name}"
        with self._lock:
            self._tags[full] = cls
            self._default_tags[cls] = full
        return cls

    def tag_of(self, cls: type, factory: str | None = None) -> str:
        """The tag a dump writes for `cls` (and `factory`); `LoadError` when unregistered."""
        tag = self._default_tags.get(cls)
        if tag is None:
            raise LoadError(f"class {cls.__module__}.{cls.__qualname__} has no registered tag")
        return tag if factory is None else f"{tag}.{factory}"

    def lookup(self, tag: str) -> Resolved | None:
        """What `tag` names, or None (bare pre-0.4.6 tags included, ambiguity aside)."""
        found = self._exact(tag)
        if found is not None:
            return found
        matches = self._by_class_name(tag)
        return matches[0] if len(matches) == 1 else None

    def resolve(self, tag: str) -> Resolved:
        """What `tag` names; `LoadError` saying why not and how to fix it."""
        found = self._exact(tag)
        if found is not None:
            return found
        matches = self._by_class_name(tag)
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(sorted(m.tag for m in matches))
            raise LoadError(
                f"ambiguous tag {tag}: classes registered as {listed} all have that name; "
                "register the intended one under the bare tag (flambe_compat.register(cls, "
                f"{tag.lstrip('!')!r}))"
            )
        raise LoadError(
            f"unknown tag {tag}: no registered class has it; import the module defining the "
            "class (a subclass of flambe_compat.Component registers itself; with "
            "flambe_compat.shim.install() code written for flambe does too) or register it "
            "with flambe_compat.register(cls, tag)"
        )

    def _exact(self, tag: str) -> Resolved | None:
        with self._lock:
            cls = self._tags.get(tag)
            if cls is not None:
                return Resolved(tag, cls)
            base, _, factory = tag.rpartition(".")
            owner = self._tags.get(base)
        if owner is not None and factory in factories_of(owner):
            return Resolved(tag, owner, factory)
        if self._torch_classes:
            return _torch_resolved(tag)
        return None

    def _by_class_name(self, tag: str) -> list[Resolved]:
        """Pre-0.4.6 bare tags (`!Wrapper`, `!Wrapper.factory`): every namespaced match."""
        name = tag.lstrip("!")
        if "." in name:
            name, _, factory = name.partition(".")
            if "." in factory:
                return []
        else:
            factory = ""
        with self._lock:
            classes = [(t, c) for t, c in self._tags.items() if t.rpartition(".")[2] == name]
        found = []
        for full, cls in classes:
            if factory and factory not in factories_of(cls):
                continue
            found.append(Resolved(f"{full}.{factory}" if factory else full, cls, factory or None))
        return found


_torch_lock = threading.Lock()
_torch_components: dict[str, type | None] = {}


def _torch_resolved(tag: str) -> Resolved | None:
    prefix = f"!{TORCH_NAMESPACE}."
    if not tag.startswith(prefix):
        return None
    name = tag[len(prefix) :]
    cls = torch_component(name)
    return None if cls is None else Resolved(tag, cls)


def torch_component(name: str) -> type | None:
    """The dynamic Component subclass flambe registered as `!torch.<name>`, or None."""
    with _torch_lock:
        if name not in _torch_components:
            base = _torch_class(name)
            _torch_components[name] = None if base is None else _dynamic_component(base)
        return _torch_components[name]


def _torch_class(name: str) -> type | None:
    import torch

    candidates: list[tuple[Any, type]] = [
        (torch.nn, torch.nn.Module),
        (torch.optim, torch.optim.Optimizer),
        (torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler),
    ]
    for module, base in candidates:
        found = getattr(module, name, None)
        if isinstance(found, type) and issubclass(found, base) and _torch_allowed(found):
            return found
    module_classes: list[type] = _all_subclasses(torch.nn.Module)
    for sub in module_classes:
        if sub.__name__ == name and _torch_allowed(sub) and sub.__module__.startswith("torch.nn"):
            return sub
    return None


def _torch_allowed(cls: type) -> bool:
    return cls.__module__.startswith("torch.") and not any(
        excluded in cls.__module__ for excluded in _TORCH_EXCLUDED
    )


def _all_subclasses(cls: type) -> list[type]:
    seen: list[type] = []
    pending = [cls]
    while pending:
        subclasses: list[type] = pending.pop().__subclasses__()
        for sub in subclasses:
            if sub not in seen:
                seen.append(sub)
                pending.append(sub)
    return seen


def _dynamic_component(base: type) -> type:
    from .component import Component

    attributes = {
        key: getattr(base, key)
        for key in ("__module__", "__name__", "__qualname__", "__doc__")
        if hasattr(base, key)
    }
    created: type = type(base.__name__, (Component, base), attributes)
    return created


registry = Registry()
"""The default registry: Component subclasses, flambe's built-ins and torch's classes."""


def register(cls: T, tag: str | None = None, *, namespace: str | None = None) -> T:
    """Register `cls` in the default registry (flambe's `register(cls, tag)`)."""
    return registry.register(cls, tag, namespace=namespace)


def alias(tag: str, tag_namespace: str | None = None) -> Callable[[T], T]:
    """Decorator: one more tag for a class (flambe's `alias`); the last one is used in dumps."""

    def decorator(cls: T) -> T:
        return registry.register(cls, tag, namespace=tag_namespace)

    return decorator


def import_builtins() -> None:
    """Import flambe's built-in classes (`flambe_compat.builtins`) so that they register."""
    if importlib.util.find_spec(_BUILTINS_PACKAGE) is not None:
        importlib.import_module(_BUILTINS_PACKAGE)

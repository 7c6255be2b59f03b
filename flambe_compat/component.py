"""`Component`: flambe's contract for objects that save and load themselves.

A Component's state is a flat `State` of dotted keys, as torch's `state_dict`, plus
metadata per Component (class name, `_flambe_version`, source, config) that flambe's
folder-per-Component format needs. Subclasses register their tag as they are defined;
`register_attrs` adds plain attributes to the state, `_state` / `_load_state` are hooks
for anything else. Inherit from `Component` before `torch.nn.Module`, as with flambe.

>>> class DocCounter(Component):
...     def __init__(self, start=0):
...         self.count = start
...         self.register_attrs("count")
>>> state = DocCounter(5).get_state()
>>> dict(state), state._metadata[""]["_flambe_class"]
({'count': 5}, 'DocCounter')
>>> fresh = DocCounter(); fresh.load_state(state); fresh.count
5
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch

from .errors import LoadError
from .layout import (
    FLAMBE_CLASS_KEY,
    FLAMBE_CONFIG_KEY,
    FLAMBE_DIRECTORIES_KEY,
    FLAMBE_SOURCE_KEY,
    FLAMBE_STASH_KEY,
    KEEP_VARS_KEY,
    STATE_DICT_DELIMETER,
    VERSION_KEY,
)
from .registry import registry
from .state import State

__all__ = ["Component", "registrable_factory", "version_mismatch"]

logger = logging.getLogger(__name__)
C = TypeVar("C", bound="Component")
_HOOKED = "_flambe_hooks"


class registrable_factory:
    """Declare a factory usable as a tag suffix: `!MyModel.from_file` calls `from_file`.

    Put it above `@classmethod`, as in flambe:

    >>> class DocModel(Component):
    ...     @registrable_factory
    ...     @classmethod
    ...     def small(cls):
    ...         return cls()
    >>> "small" in DocModel._yaml_registered_factories
    True
    """

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __set_name__(self, owner: type, name: str) -> None:
        _own_factories(owner).add(name)
        setattr(owner, name, self.fn)


def _own_factories(cls: type) -> set[str]:
    """`cls`'s own set of factory names: inherited ones copied, never shared with cousins."""
    if "_yaml_registered_factories" not in cls.__dict__:
        cls._yaml_registered_factories = set(getattr(cls, "_yaml_registered_factories", ()))  # type: ignore[attr-defined]
    factories: set[str] = cls._yaml_registered_factories  # type: ignore[attr-defined]
    return factories


def _skipped(obj: Any) -> bool:
    """Optimizers and LR schedulers are Components whose state flambe never saved."""
    return isinstance(obj, torch.optim.Optimizer | torch.optim.lr_scheduler.LRScheduler)


def _is_module(obj: object) -> bool:
    """Whether `obj` is an `nn.Module` (a helper: mypy deems Component+Module impossible,
    their `compile` methods differ; Component's wins, as in flambe)."""
    return isinstance(obj, torch.nn.Module)


def _source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""


def semantic(version: str) -> bool:
    """Whether flambe compared `version` semantically: every part at least 1 (`0.0.0`, the
    default, opts out)."""
    try:
        return min(int(part) for part in version.split(".")) > 0
    except ValueError:
        return False


def version_mismatch(class_name: str, saved: str, current: str) -> str | None:
    """flambe's rule: a major-version difference is an error (None when compatible)."""
    if not semantic(saved) or saved.split(".")[0] == current.split(".")[0]:
        return None
    return (
        f"class {class_name} is version {current} but the archive holds version {saved}; "
        "register how its state changed: @flambe_compat.register_class_migration("
        f"{class_name!r}, {saved.split('.')[0] + '.x'!r}, {current!r})"
    )


class Component:
    """A flambe object: registered tag, config, and a state that round-trips."""

    _flambe_version: ClassVar[str] = "0.0.0"
    """`MAJOR.MINOR.PATCH` (every part >= 1 opts into flambe's major-version check)."""
    _yaml_registered_factories: ClassVar[set[str]] = set()

    def __init_subclass__(
        cls,
        should_register: bool = True,
        tag_override: str | None = None,
        tag_namespace: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        _own_factories(cls)
        if should_register:
            registry.register(cls, tag_override, namespace=tag_namespace)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._schema: Any = None
        _install_hooks(self)

    def run(self) -> bool:
        """One computational step of an experiment; True when there is more to do."""
        return False

    def metric(self) -> float | None:
        """The value experiments compare variants by (none by default)."""
        return None

    def register_attrs(self, *names: str) -> None:
        """Save and load these existing attributes with the state (`prefix + name` keys)."""
        for name in names:
            if not hasattr(self, name):
                raise AttributeError(
                    f"{type(self).__name__} object has no attribute {name}, so it cannot be "
                    "registered"
                )
        registered = self.__dict__.setdefault("_registered_attributes", set())
        registered.update(names)

    @classmethod
    def precompile(cls, **kwargs: Any) -> None:
        """Hook called with the keyword arguments before they are built (nothing by default)."""

    @classmethod
    def compile(
        cls: type[C],
        _flambe_custom_factory_name: str | None = None,
        _flambe_extensions: dict[str, str] | None = None,
        _flambe_stash: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> C:
        """Build an instance from keyword arguments that may hold unbuilt specs and links,
        recording them (with the defaults filled in) so that `get_state` carries a config."""
        from .build import compile_class

        built: C = compile_class(
            cls, _flambe_custom_factory_name, kwargs, _flambe_stash or {}, _flambe_extensions
        )
        return built

    def save(self, path: str, **kwargs: Any) -> None:
        """`flambe_compat.save(self, path, **kwargs)`."""
        from .serialization import save

        save(self, path, **kwargs)

    @registrable_factory
    @classmethod
    def load_from_path(
        cls,
        path: str,
        map_location: Any = None,
        use_saved_config_defaults: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Load a saved object; without saved defaults, `cls(**kwargs)` gets the state."""
        from .serialization import load, load_state_from_file

        if use_saved_config_defaults:
            return load(path, map_location=map_location)
        instance = cls(**kwargs)
        instance.load_state(load_state_from_file(path, map_location=map_location))
        return instance

    # saving

    def get_state(
        self, destination: State | None = None, prefix: str = "", keep_vars: bool = False
    ) -> State:
        """The object's state: torch's `state_dict` keys, registered attributes, `_state`'s,
        and the flambe metadata of every Component in it (parents before children)."""
        if destination is None:
            destination = State()
            destination._metadata = OrderedDict(
                {FLAMBE_DIRECTORIES_KEY: {prefix}, KEEP_VARS_KEY: keep_vars}
            )
        if _is_module(self):
            module_self: Any = self
            for module in module_self.modules():
                if isinstance(module, Component):
                    _install_hooks(module)
            result: State = module_self.state_dict(
                destination=destination, prefix=prefix, keep_vars=keep_vars
            )
            return result
        if _skipped(self):
            return destination
        local_metadata: dict[str, Any] = {}
        destination._metadata[prefix[:-1]] = local_metadata
        return self._state_dict_hook(self, destination, prefix, local_metadata)

    @staticmethod
    def _state_dict_hook(
        self: Component, state_dict: State, prefix: str, local_metadata: dict[str, Any]
    ) -> State:
        """flambe metadata for this node, then its Component children outside torch's tree."""
        metadata = state_dict._metadata
        metadata.setdefault(FLAMBE_DIRECTORIES_KEY, set())
        metadata.setdefault(KEEP_VARS_KEY, False)
        local_metadata[VERSION_KEY] = self._flambe_version
        local_metadata[FLAMBE_CLASS_KEY] = type(self).__name__
        local_metadata[FLAMBE_SOURCE_KEY] = _source(type(self))
        if hasattr(self, "_saved_kwargs"):
            from .yamlconfig import dump_object

            config, stash = dump_object(self)
            local_metadata[FLAMBE_CONFIG_KEY] = config
            if stash:
                local_metadata[FLAMBE_STASH_KEY] = stash
        is_module = _is_module(self)
        for name, attr in list(self.__dict__.items()):
            path = prefix + name
            if isinstance(attr, Component) and not _skipped(attr):
                if not (is_module and _is_module(attr)):
                    state_dict = attr.get_state(
                        destination=state_dict,
                        prefix=path + STATE_DICT_DELIMETER,
                        keep_vars=metadata[KEEP_VARS_KEY],
                    )
                metadata[FLAMBE_DIRECTORIES_KEY].add(path)
            elif not is_module and isinstance(attr, torch.nn.Module):
                state_dict = attr.state_dict(
                    destination=state_dict,
                    prefix=path + STATE_DICT_DELIMETER,
                    keep_vars=metadata[KEEP_VARS_KEY],
                )
        metadata[FLAMBE_DIRECTORIES_KEY].add(prefix[:-1])
        for name in sorted(self.__dict__.get("_registered_attributes", ())):
            state_dict[prefix + name] = getattr(self, name)
        return self._state(state_dict, prefix, local_metadata)

    def _state(self, state_dict: State, prefix: str, local_metadata: dict[str, Any]) -> State:
        """Hook: add custom state under `prefix` (nothing by default)."""
        return state_dict

    # loading

    def load_state(self, state_dict: State, strict: bool = False) -> None:
        """Load a state from `get_state` into this object, parents before children.

        `RuntimeError` lists torch's errors (shape mismatches; with `strict`, missing and
        unexpected keys); a major-version mismatch raises `LoadError`.
        """
        missing: list[str] = []
        unexpected: list[str] = []
        errors: list[str] = []
        metadata = getattr(state_dict, "_metadata", None)
        state_dict = State(state_dict)
        state_dict._metadata = metadata if metadata is not None else {}

        def load(obj: Any, prefix: str) -> None:
            local = state_dict._metadata.get(prefix[:-1], {})
            if _is_module(obj):
                if isinstance(obj, Component):
                    _install_hooks(obj)
                obj._load_from_state_dict(
                    state_dict, prefix, local, True, missing, unexpected, errors
                )
            elif isinstance(obj, Component):
                obj._load_state_dict_hook(
                    state_dict, prefix, local, True, missing, unexpected, errors
                )
            for name, child in list(vars(obj).items()):
                component = isinstance(child, Component) and not _skipped(child)
                # plain modules of plain Components: flambe saved them but never loaded them
                held_module = _is_module(child) and not _is_module(obj)
                if component or held_module:
                    load(child, prefix + name + STATE_DICT_DELIMETER)
            if _is_module(obj):
                for name, module in obj._modules.items():
                    if module is not None:
                        load(module, prefix + name + STATE_DICT_DELIMETER)

        load(self, "")
        if strict:
            if unexpected:
                errors.insert(0, f"Unexpected key(s) in state_dict: {', '.join(unexpected)}. ")
            if missing:
                errors.insert(0, f"Missing key(s) in state_dict: {', '.join(missing)}. ")
        if errors:
            joined = "\n\t".join(errors)
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t{joined}"
            )

    def _load_state_dict_hook(
        self,
        state_dict: State,
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """The user's `_load_state`, registered attributes, then the version check."""
        self._load_state(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        for name in sorted(self.__dict__.get("_registered_attributes", ())):
            if prefix + name in state_dict:
                setattr(self, name, state_dict[prefix + name])
            else:
                missing_keys.append(prefix + name)
        saved = local_metadata.get(VERSION_KEY)
        if isinstance(saved, str):
            problem = version_mismatch(type(self).__name__, saved, type(self)._flambe_version)
            if problem is not None:
                raise LoadError(f"node {prefix[:-1] or '(root)'}: {problem}")
            if (
                semantic(saved)
                and saved.split(".")[:2] != type(self)._flambe_version.split(".")[:2]
            ):
                logger.warning(
                    "%s: saved version %s differs from %s",
                    type(self).__name__,
                    saved,
                    type(self)._flambe_version,
                )

    def _load_state(
        self,
        state_dict: State,
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Hook: read back what `_state` added (nothing by default)."""


def _install_hooks(obj: Component) -> None:
    """Hook flambe's metadata and loading into torch's `state_dict` machinery, once."""
    if not _is_module(obj) or obj.__dict__.get(_HOOKED):
        return
    if "_modules" not in obj.__dict__:  # nn.Module.__init__ has not run yet
        return
    module: Any = obj
    hook: Callable[..., Any] = obj._state_dict_hook
    module._register_state_dict_hook(hook)
    module._register_load_state_dict_pre_hook(obj._load_state_dict_hook)
    obj.__dict__[_HOOKED] = True

"""Rebuild a saved object: its root config, built through the registry, then its state.

What flambe's `load()` did after reading the state: parse the root's `_flambe_config`,
import (or, with `auto_install`, install) the extension modules it names, build the
graph with the root's `_flambe_stash`, then `load_state`. Differences: extension modules
are imported only when the caller allows it, class state migrations run before flambe's
major-version check, and every failure is a `LoadError`.

>>> from flambe_compat import State
>>> from flambe_compat.registry import Registry
>>> class Counter:
...     def __init__(self, start=0):
...         self.count = start
...     def load_state(self, state, strict=False):
...         self.count = state["count"]
>>> registry = Registry(); _ = registry.register(Counter, "mine.Counter")
>>> state = State({"count": 7})
>>> state._metadata = {"": {"_flambe_config": "!mine.Counter\\nstart: 1\\n"}}
>>> rebuild(state, registry=registry).count
7
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

from .build import build
from .class_migrations import ClassMigrations
from .class_migrations import class_migrations as default_class_migrations
from .component import Component, version_mismatch
from .errors import LoadError
from .layout import FLAMBE_CONFIG_KEY, FLAMBE_STASH_KEY, STATE_DICT_DELIMETER, VERSION_KEY
from .registry import Registry, import_builtins
from .registry import registry as default_registry
from .state import State
from .yamlconfig import TaggedNode, parse_config, tagged_nodes

__all__ = [
    "build_root",
    "components",
    "from_config",
    "migrate_versions",
    "object_tree",
    "rebuild",
]

logger = logging.getLogger(__name__)
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def rebuild(
    state: State,
    *,
    registry: Registry | None = None,
    trusted: bool = False,
    auto_install: bool = False,
    extensions: Iterable[str] = (),
    class_migrations: ClassMigrations | None = None,
) -> Any:
    """The object `state`'s root config describes, with `state` loaded into it."""
    if registry is None:
        import_builtins()
        registry = default_registry
    built = build_root(
        state, registry=registry, trusted=trusted, auto_install=auto_install, extensions=extensions
    )
    state = migrate_versions(built, state, class_migrations or default_class_migrations)
    load_state = getattr(built, "load_state", None)
    if not callable(load_state):
        raise LoadError(f"the root object ({type(built).__name__}) has no load_state method")
    try:
        load_state(state)
    except LoadError:
        raise
    except Exception as error:
        raise LoadError(
            f"loading the state into {type(built).__name__} failed: {type(error).__name__}: "
            f"{' '.join(str(error).split())}"
        ) from None
    return built


def build_root(
    state: State,
    *,
    registry: Registry,
    trusted: bool = False,
    auto_install: bool = False,
    extensions: Iterable[str] = (),
) -> Any:
    """Build (without loading the state) the object the root's config describes."""
    root = getattr(state, "_metadata", {}).get("", {})
    text = root.get(FLAMBE_CONFIG_KEY) if isinstance(root, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise LoadError(
            "the archive's root has no config (the object was not built from a config or "
            "with compile, or its config could not be written): load its state with "
            "load_state_from_file instead"
        )
    allowed = set(extensions)
    wanted: dict[str, str] = {}

    def on_extensions(found: dict[str, str]) -> None:
        wanted.update(found)
        for module, requirement in found.items():
            _import_extension(module, requirement, trusted or module in allowed, auto_install)

    try:
        config = parse_config(text, registry, on_extensions)
    except LoadError as error:
        missing = [m for m in wanted if m not in sys.modules]
        if missing and "unknown tag" in str(error):
            raise LoadError(
                f"{error}. The config's extensions name {', '.join(missing)}: allow importing "
                "them with extensions=[...], trusted=True or auto_install=True"
            ) from None
        raise
    stash = root.get(FLAMBE_STASH_KEY) or {}
    if not isinstance(stash, dict):
        raise LoadError("the root's _flambe_stash is not a mapping")
    return build(config.root, stash, config.extensions, trusted=trusted)


def object_tree(state: State, registry: Registry | None = None) -> list[TaggedNode]:
    """The tags of the root's config, each resolved in `registry` or not, nothing built."""
    if registry is None:
        import_builtins()
        registry = default_registry
    root = getattr(state, "_metadata", {}).get("", {})
    text = root.get(FLAMBE_CONFIG_KEY) if isinstance(root, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise LoadError("the archive's root has no config: there is no object to rebuild")
    return tagged_nodes(text, registry)


def from_config(
    text: str,
    *,
    registry: Registry | None = None,
    stash: dict[str, Any] | None = None,
    trusted: bool = False,
) -> Any:
    """Build the object a config describes (no state; extension modules are not imported)."""
    if registry is None:
        import_builtins()
        registry = default_registry
    config = parse_config(text, registry)
    return build(config.root, stash or {}, config.extensions, trusted=trusted)


def _import_extension(module: str, requirement: str, allowed: bool, auto_install: bool) -> None:
    if not _MODULE_NAME.match(module):
        raise LoadError(f"config extensions: {module!r} is not a module name")
    if module in sys.modules or not (allowed or auto_install):
        return
    if importlib.util.find_spec(module.split(".")[0]) is None:
        if not auto_install:
            raise LoadError(
                f"config extension module {module} is not installed: pip install "
                f"{requirement!r}, or load with auto_install=True"
            )
        _install(module, requirement)
    try:
        importlib.import_module(module)
    except Exception as error:
        raise LoadError(
            f"importing config extension module {module} raised {type(error).__name__}: {error}"
        ) from None


def _install(module: str, requirement: str) -> None:
    if not requirement or requirement.startswith("-"):
        raise LoadError(f"config extension {module}: {requirement!r} is not a requirement")
    logger.warning("auto_install: installing %s for extension module %s", requirement, module)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-U", requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise LoadError(
            f"pip could not install {requirement} for extension module {module}:\n"
            f"{done.stderr[-2000:]}"
        )
    importlib.invalidate_caches()


def components(obj: Any, prefix: str = "") -> list[tuple[str, Component]]:
    """Every Component `load_state` visits, with its prefix, parents before children."""
    found: list[tuple[str, Component]] = []
    seen: set[int] = set()

    def visit(value: Any, path: str) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, Component):
            found.append((path, value))
        children = list(vars(value).items()) if hasattr(value, "__dict__") else []
        children += list(getattr(value, "_modules", {}).items())
        for name, child in children:
            if isinstance(child, Component) or hasattr(child, "_modules"):
                visit(child, f"{path}{STATE_DICT_DELIMETER}{name}" if path else name)

    visit(obj, prefix)
    return found


def migrate_versions(obj: Any, state: State, migrations: ClassMigrations) -> State:
    """Bring nodes saved at another version to their class's, by the registered steps.

    A major-version difference with no registered migration is flambe's error, raised
    here naming the class, both versions and how to register a migration.
    """
    metadata = getattr(state, "_metadata", {})
    targets: dict[str, str] = {}
    for prefix, component in components(obj):
        saved = metadata.get(prefix, {}).get(VERSION_KEY) if isinstance(metadata, dict) else None
        current = type(component)._flambe_version
        name = type(component).__name__
        if not isinstance(saved, str) or saved == current or name in targets:
            continue
        try:
            migrations.chain(name, saved, until=current)
        except (LoadError, ValueError):
            problem = version_mismatch(name, saved, current)
            if problem is not None:
                raise LoadError(f"node {prefix or '(root)'}: {problem}") from None
            continue
        targets[name] = current
    return migrations.apply(state, targets) if targets else state

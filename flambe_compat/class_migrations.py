"""User migrations of one Component class's state between its semantic versions.

flambe refused to load a Component whose saved `_flambe_version` had another major
version than the class. Register how the state changed instead, and upgrades and loads
bring old nodes forward, one registered step at a time:

>>> registry = ClassMigrations()
>>> @registry.register("Stack", "1.x", "2.0.0")
... def rename_proj(state):
...     state["projection.weight"] = state.pop("proj.weight")
...     return state
>>> from flambe_compat.tree import node_metadata
>>> s = State({"proj.weight": 1}); s._metadata = {
...     "_flambe_directories": {""}, "": node_metadata("Stack", "1.2.0")}
>>> new = registry.apply(s)
>>> dict(new), new._metadata[""]["_flambe_version"]
({'projection.weight': 1}, '2.0.0')

A step's `source` is a version (`"1.0.0"`), a major wildcard (`"1.x"`) or a PEP 440
specifier set (`">=1.0,<2"`); `target` is the exact version the step produces. Steps are
found by class name and chained in order, the nearest target first when several accept a
version (`1.0.0 -> 1.1.0` runs before `1.x -> 2.0.0`, whatever the registration order),
until no step applies (or a requested version is reached); the node's recorded version
follows, so `version.txt`, the metadata and the manifest of a save agree.
"""

from __future__ import annotations

import importlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .errors import LoadError
from .layout import KEEP_VARS_KEY
from .state import State
from .tree import SaveTreeNode, state_to_tree, tree_to_state

StateMigration = Callable[[dict[str, Any]], dict[str, Any]]
_WILDCARD = re.compile(r"^(\d+)\.x$")
MAX_STEPS = 1000


@dataclass(frozen=True)
class ClassStep:
    """One registered step of a class: which versions it accepts, what it produces."""

    class_name: str
    source: SpecifierSet
    target: Version
    function: StateMigration


@dataclass
class ClassMigrations:
    """A registry of class state migrations."""

    steps: list[ClassStep] = field(default_factory=list)

    def register(
        self, class_name: str, source: str, target: str
    ) -> Callable[[StateMigration], StateMigration]:
        """Decorator: register `function(state) -> state` for a class, `source` -> `target`."""
        step_source, step_target = _specifier(source), _version(target)
        if step_target in step_source:
            raise ValueError(f"{class_name}: step {source} -> {target} would never stop")

        def decorator(function: StateMigration) -> StateMigration:
            self.steps.append(ClassStep(class_name, step_source, step_target, function))
            return function

        return decorator

    def chain(self, class_name: str, version: str, until: str | None = None) -> list[ClassStep]:
        """The steps taking `class_name` from `version` forward (to `until` when given)."""
        current, steps = _version(version), list[ClassStep]()
        goal = _version(until) if until is not None else None
        while goal is None or current != goal:
            accepting = [
                s for s in self.steps if s.class_name == class_name and current in s.source
            ]
            step = min(accepting, key=lambda s: s.target, default=None)  # nearest version first
            if step is None or len(steps) >= MAX_STEPS:
                break
            steps.append(step)
            current = step.target
        if goal is not None and current != goal:
            raise LoadError(
                f"no registered migration takes class {class_name} from {version} to {until} "
                f"(stopped at {current})"
            )
        return steps

    def apply(self, state: State, targets: Mapping[str, str] | None = None) -> State:
        """A copy of `state` with every Component brought forward by the registered steps.

        With `targets` (class name -> version), only those classes move, each exactly to
        the version given (or `LoadError`); without, every class moves as far as it can.
        """
        tree = state_to_tree(state)
        migrated = self.apply_tree(tree, targets)
        if migrated is tree:
            return state
        return tree_to_state(migrated, state._metadata.get(KEEP_VARS_KEY))

    def apply_tree(
        self, node: SaveTreeNode, targets: Mapping[str, str] | None = None
    ) -> SaveTreeNode:
        """`apply` on a save tree (what loads and upgrades call): the tree below `node`,
        with new nodes where a Component moved; `node` itself when none did."""
        children = {name: self.apply_tree(c, targets) for name, c in node.children.items()}
        steps: list[ClassStep] = []
        if targets is None or node.class_name in targets:
            until = None if targets is None else targets[node.class_name]
            steps = self.chain(node.class_name, node.version, until)
        if not steps and all(children[n] is c for n, c in node.children.items()):
            return node
        state: dict[str, Any] = OrderedDict(node.state)
        for step in steps:
            state = OrderedDict(_run_step(step, state))
        state._metadata = getattr(node.state, "_metadata", {})  # type: ignore[attr-defined]
        version = str(steps[-1].target) if steps else node.version
        return node._replace(state=state, version=version, children=children)


def _run_step(step: ClassStep, state: dict[str, Any]) -> Mapping[str, Any]:
    """One user step; whatever goes wrong in it becomes a `LoadError` naming it."""
    name = f"class migration {step.function.__qualname__} of {step.class_name} to {step.target}"
    try:
        migrated = step.function(state)
    except Exception as error:
        raise LoadError(f"{name} failed: {type(error).__name__}: {error}") from error
    if not isinstance(migrated, Mapping):
        raise LoadError(f"{name} returned {type(migrated).__name__}, not the state")
    return migrated


def _specifier(source: str) -> SpecifierSet:
    wildcard = _WILDCARD.match(source.strip())
    text = f"=={wildcard.group(1)}.*" if wildcard else source
    try:
        return SpecifierSet(text) if any(c in text for c in "<>=!~") else SpecifierSet(f"=={text}")
    except InvalidSpecifier:
        raise ValueError(f"{source!r} is not a version, 'N.x' or a specifier set") from None


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise ValueError(f"{text!r} is not a version") from None


class_migrations = ClassMigrations()
"""The default registry: what `register_class_migration` fills and `--plugins` modules use."""
register_class_migration = class_migrations.register


def import_plugins(modules: Iterable[str]) -> None:
    """Import user modules that register class migrations (`upgrade --plugins MODULE`)."""
    for name in modules:
        importlib.import_module(name)

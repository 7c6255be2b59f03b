"""The object side of the command line: `inspect --objects` and `validate --rebuild`.

`inspect --objects` prints the object tree the root config describes, each tag with the
class the registry resolves it to, or MISSING. `validate --rebuild` also rebuilds each
valid archive's object (config, then state): an archive whose classes are missing, or
whose object does not build, is invalid. `--plugins MODULE` imports the user's modules
first (through `flambe_compat.shim` when flambe itself is not installed, so that code
written for flambe imports unchanged).

>>> print(render_objects("fixtures/flambe-corpus/0.4.18-zip/mlp-dir")[0])
fixtures/flambe-corpus/0.4.18-zip/mlp-dir: objects
. !sample_models.MLP  ...
1 tag, ... missing
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import shim
from .errors import LoadError
from .objects import object_tree
from .serialization import load, load_state_from_file
from .yamlconfig import TaggedNode, is_reference


@dataclass
class RebuildResult:
    """Whether an archive's object rebuilt, and the classes it misses."""

    source: str
    ok: bool
    missing: list[str] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "missing": self.missing, "error": self.error}

    def render(self) -> str:
        if self.ok:
            return f"{self.source}: rebuilt"
        if self.missing:
            return f"{self.source}: cannot rebuild, missing classes: {', '.join(self.missing)}"
        return f"{self.source}: cannot rebuild: {self.error}"


def import_plugins(modules: Iterable[str]) -> None:
    """Import the user's modules, under the shim when the real flambe is not installed."""
    names = list(modules)
    if not names:
        return
    use_shim = not shim.installed()
    if use_shim:
        try:
            shim.install()
        except shim.ShimError:
            use_shim = False
    try:
        for name in names:
            importlib.import_module(name)
    finally:
        if use_shim:
            shim.uninstall()


def _describe(node: TaggedNode) -> str:
    if is_reference(node.tag):
        return "reference"
    if node.resolved is None:
        return "MISSING"
    cls = node.resolved.cls
    factory = f".{node.resolved.factory}" if node.resolved.factory else ""
    return f"{cls.__module__}.{cls.__qualname__}{factory}"


def render_objects(path: str | os.PathLike[str]) -> tuple[str, int]:
    """The object tree of the archive at `path` and the number of missing classes."""
    nodes = object_tree(load_state_from_file(path))
    lines = [f"{os.fspath(path)}: objects"]
    for node in nodes:
        depth = 1 + node.path.count(".") + node.path.count("[") if node.path else 0
        lines.append(f"{'  ' * depth}{node.path or '.'} {node.tag}  {_describe(node)}")
    missing = sum(_describe(node) == "MISSING" for node in nodes)
    lines.append(f"{len(nodes)} tag{'s' if len(nodes) != 1 else ''}, {missing} missing")
    return "\n".join(lines), missing


def rebuild_check(path: str | os.PathLike[str]) -> RebuildResult:
    """Rebuild the object saved at `path` (config and state) and say what went wrong."""
    source = os.fspath(path)
    try:
        nodes = object_tree(load_state_from_file(path))
        missing = [
            f"{node.tag} ({node.path or 'root'}, line {node.line})"
            for node in nodes
            if node.resolved is None and not is_reference(node.tag)
        ]
        if missing:
            return RebuildResult(source, False, missing)
        load(path)
    except LoadError as error:
        return RebuildResult(source, False, error=str(error))
    return RebuildResult(source, True)

"""The migration chain: single-step upgrades (and one downgrade) between format revisions.

Each step lives in its own module of `migrations/` with `SOURCE`, `TARGET` and a plain
function `migrate(archive) -> archive`; its docstring says what changed in flambe and
why. `plan(source, target)` finds the shortest path of steps, refusing unknown revisions
and revisions newer than we know with a clear error; `run` applies a plan, records the
original revision once, and checks the archive against the target revision's schema
after every step (via the `step_problems` callback), so a broken step stops the chain.

>>> [f"{m.source}->{m.target}" for m in plan("1.2", "2.0")]
['1.2->1.3', '1.3->1.4', '1.4->2.0']
>>> [f"{m.source}->{m.target}" for m in plan("2.0", "1.4")]
['2.0->1.4']
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .archive import Archive
from .errors import LoadError
from .problems import Problem
from .resources import resource_path
from .revisions import DOWNGRADES, REVISIONS, TABLE, Revision, info, newer_than_known
from .revisions import FLAMBE_READABLE as FLAMBE_READABLE
from .revisions import LATEST as LATEST


class MigrationError(LoadError):
    """No way between two revisions, or a step produced an archive its schema refuses."""


@dataclass(frozen=True)
class Migration:
    """One step: `source` -> `target`, the function doing it, and why (its docstring)."""

    source: Revision
    target: Revision
    function: Callable[[Archive], Archive]
    module: str

    @property
    def reason(self) -> str:
        """The first paragraph of the step's docstring."""
        return (self.function.__doc__ or "").strip().split("\n\n")[0]


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """Every step the revision table names (shipped in `migrations/`), ordered by source
    then target revision."""
    names = [row.upgrade for row in TABLE if row.upgrade is not None] + list(DOWNGRADES)
    steps = []
    for name in names:
        module = _import(resource_path("migrations", f"{name}.py"))
        steps.append(Migration(module.SOURCE, module.TARGET, module.migrate, module.__name__))
    return tuple(sorted(steps, key=lambda m: (info(m.source).version, info(m.target).version)))


def _import(path: Path) -> ModuleType:
    name = f"flambe_compat.migrations.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, str(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the migration step {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def plan(source: str, target: str) -> list[Migration]:
    """The shortest list of steps from `source` to `target` (empty when they are equal)."""
    for revision, role in ((source, "archive"), (target, "target")):
        if revision not in REVISIONS:
            newer = newer_than_known(revision)
            raise MigrationError(
                f"{role} revision {revision!r} is "
                + (
                    "newer than this flambe-compat knows; upgrade flambe-compat"
                    if newer
                    else f"unknown; known revisions: {', '.join(REVISIONS)}"
                )
            )
    paths: dict[str, list[Migration]] = {source: []}
    queue = deque([source])
    while queue:
        current = queue.popleft()
        if current == target:
            return paths[current]
        for step in migrations():
            if step.source == current and step.target not in paths:
                paths[step.target] = [*paths[current], step]
                queue.append(step.target)
    raise MigrationError(f"no migration path from revision {source} to {target}")


StepProblems = Callable[[Archive], Sequence[Problem]]


def run(
    archive: Archive,
    target: str = LATEST,
    step_problems: StepProblems | None = None,
    on_step: Callable[[Migration], None] | None = None,
) -> Archive:
    """Apply the steps from `archive.revision` to `target`, checking after each one."""
    steps = plan(archive.revision, target)
    if steps and archive.original_revision is None:
        archive = dataclasses.replace(archive, original_revision=archive.revision)
    for step in steps:
        if on_step is not None:
            on_step(step)
        try:
            archive = step.function(archive)
        except Exception as error:
            raise MigrationError(
                f"{step.module} failed: {type(error).__name__}: {error}"
            ) from error
        if archive.revision != step.target:
            raise MigrationError(
                f"{step.module} left revision {archive.revision}, not {step.target}"
            )
        try:
            problems = step_problems(archive) if step_problems is not None else ()
        except OSError:
            raise
        except Exception as error:  # the writer cannot even encode what the step produced
            raise MigrationError(
                f"{step.module} produced an archive that cannot be written as revision "
                f"{step.target}: {type(error).__name__}: {error}"
            ) from error
        if problems:
            listing = "\n".join(f"  {p.render(f'revision {step.target}')}" for p in problems)
            raise MigrationError(f"{step.module} produced an invalid archive:\n{listing}")
    return archive

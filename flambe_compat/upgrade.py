"""Upgrading archives: decode, migrate step by step, write a new archive, validate, publish.

`upgrade(source)` rewrites an archive in the latest revision (or `to="1.4"` for flambe
0.4.18) in place, keeping the original as a backup that never overwrites an earlier
one; `upgrade(source, destination)` writes a new archive and leaves the source alone.
Nothing replaces anything until the new archive is complete and valid, so a failure at
any point leaves the source untouched and no temporary files behind.

>>> import shutil, tempfile, pathlib
>>> work = pathlib.Path(tempfile.mkdtemp())
>>> source = shutil.copytree("fixtures/flambe-corpus/0.4.3-legacy/counter-dir", work / "m")
>>> result = upgrade(source)
>>> result.steps, result.backup.name
(['1.0->1.1', '1.1->1.2', '1.2->1.3', '1.3->1.4', '1.4->2.0'], 'm.bak')
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .archive import Archive
from .class_migrations import ClassMigrations
from .container import opened
from .errors import LoadError
from .layout import COMPRESSED_SUFFIX, PICKLE_SUFFIX
from .migrate import LATEST, Migration, plan, run
from .problems import Problem
from .publish import staging
from .read import read_archive
from .state import State
from .store import fetched, is_url, shown, staged
from .unpickle import Trust
from .validate import check
from .write import write_archive


@dataclass
class UpgradeResult:
    """What an upgrade did (or, for a dry run, would do)."""

    source: Path | str
    """A local path, or a URL as printed (without credentials)."""
    source_revision: str
    target_revision: str
    steps: list[str]
    destination: Path | str | None = None
    backup: Path | str | None = None
    classes: dict[str, str] = field(default_factory=dict)
    """Component prefix -> new class version, for nodes moved by class migrations."""
    dry_run: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "destination": None if self.destination is None else str(self.destination),
            "backup": None if self.backup is None else str(self.backup),
            "from": self.source_revision,
            "to": self.target_revision,
            "steps": self.steps,
            "classes": self.classes,
            "dry_run": self.dry_run,
        }


def upgrade(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str] | None = None,
    *,
    to: str = LATEST,
    dry_run: bool = False,
    class_migrations: ClassMigrations | None = None,
    trust: Trust | None = None,
    on_step: Callable[[Migration], None] | None = None,
    atomic: bool = True,
) -> UpgradeResult:
    """Upgrade the archive at `source` to revision `to`; see the module docstring.

    `source` and `destination` may be URLs (see `flambe_compat.store`): the archive is
    upgraded locally and uploaded; in place, the original is first copied to `NAME.bak`
    on the store. `atomic=False` accepts a protocol 1 folder uploaded file by file.
    """
    trust = trust or Trust()
    with fetched(source) as local, opened(local) as archive:
        report = check(archive, trust=trust)
        report.raise_for_problems()
        decoded = read_archive(archive, report, trust)
        container = archive.container
    steps = plan(decoded.revision, to)
    result = UpgradeResult(
        _named(source),
        decoded.revision,
        to,
        [f"{s.source}->{s.target}" for s in steps],
        dry_run=dry_run,
    )
    if dry_run:
        return result
    upgraded = run(decoded, to, check=check_revision, on_step=on_step)
    if class_migrations is not None:
        state = class_migrations.apply(upgraded.state)
        result.classes = _moved_classes(upgraded.state, state)
        upgraded = Archive(
            state,
            upgraded.revision,
            upgraded.layout,
            upgraded.requirements,
            upgraded.original_revision,
        )
    if destination is None and not steps and not result.classes:
        return result  # already there: nothing is rewritten, no backup is made
    compress = container == "tar.gz"
    pickle_only = upgraded.layout == "pickle"
    in_place = destination is None
    remote = is_url(source if destination is None else destination)
    with staged(
        source if destination is None else destination,
        overwrite=in_place,
        atomic=atomic,
        backup=in_place,
    ) as out:
        target = out.path
        with staging(target) as scratch:
            built = write_archive(
                upgraded, scratch / _base_name(target, compress, pickle_only), compress=compress
            )
            with opened(built) as written:
                check(written, trust=trust).raise_for_problems()
            final = target if in_place and not remote else target.with_name(built.name)
            if in_place and not remote:
                result.backup = _free_backup_name(target)
                os.rename(target, result.backup)
            elif final.exists():
                raise LoadError(f"{final}: already exists; choose another destination")
            os.rename(built, final)
    result.destination = final if out.final is None else out.final
    if out.backup is not None:
        result.backup = out.backup
    return result


def _named(path: str | os.PathLike[str]) -> Path | str:
    """A local path as a `Path`, a URL as printed (without credentials)."""
    return shown(path) if is_url(path) else Path(path)


def _base_name(target: Path, compress: bool, pickle_only: bool) -> str:
    """The name the writer is given, so that its suffixes land on `target`'s name."""
    name = target.name
    for suffix, applies in ((COMPRESSED_SUFFIX, compress), (PICKLE_SUFFIX, pickle_only)):
        if applies and name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _free_backup_name(source: Path) -> Path:
    """`NAME.bak`, or `NAME.bak.1`, `.2`... : the first that does not exist yet."""
    candidate = source.with_name(source.name + ".bak")
    number = 0
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = source.with_name(f"{source.name}.bak.{number}")
    return candidate


def _moved_classes(before: State, after: State) -> dict[str, str]:
    moved = {}
    for prefix, entry in after._metadata.items():
        old = before._metadata.get(prefix)
        if isinstance(entry, Mapping) and isinstance(old, Mapping):
            version = entry.get("_flambe_version")
            if version is not None and version != old.get("_flambe_version"):
                moved[prefix] = str(version)
    return moved


def check_revision(archive: Archive) -> list[Problem]:
    """The problems of `archive` written in its revision: the per-step schema check.

    Tensors are written as meta tensors (dtype and shape, no data), so the check costs
    a few small files whatever the archive's size.
    """
    skeleton = Archive(
        _without_tensor_data(archive.state),
        archive.revision,
        archive.layout,
        archive.requirements,
        archive.original_revision,
    )
    with tempfile.TemporaryDirectory(prefix="flambe-compat-check-") as scratch:
        written = write_archive(skeleton, Path(scratch) / "archive")
        with opened(written) as archive_files:
            report = check(archive_files, trust=Trust(trusted=True), revision=archive.revision)
    return report.problems


def _without_tensor_data(state: State) -> State:
    skeleton = State((key, _meta(value)) for key, value in state.items())
    skeleton._metadata = {key: _meta(value) for key, value in state._metadata.items()}
    return skeleton


def _meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("meta")
    if isinstance(value, dict):
        return {key: _meta(item) for key, item in value.items()}
    return value

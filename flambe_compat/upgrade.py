"""Upgrading archives: decode, migrate step by step, write a new archive, validate, publish.

`upgrade(source)` rewrites an archive in the latest revision (or `to="1.4"` for flambe
0.4.18) in place, keeping the original as a backup that never overwrites an earlier
one; `upgrade(source, destination)` writes a new archive and leaves the source alone.
The result of every migration step is judged in memory against its target revision's
schema, as that revision's writer would write it; a dry run stops after validation
(reading no tensor bytes). Nothing replaces anything until the new archive is complete
and valid, and an in-place upgrade is published by one atomic exchange (see
`publish.exchange_keeping_backup`), so a failure or a crash at any point leaves the
source untouched, or the new archive in place and the original as its backup.

>>> import shutil, tempfile, pathlib
>>> work = pathlib.Path(tempfile.mkdtemp())
>>> source = shutil.copytree("fixtures/flambe-corpus/0.4.3-legacy/counter-dir", work / "m")
>>> result = upgrade(source)
>>> result.steps, result.backup.name
(['1.0->1.1', '1.1->1.2', '1.2->1.3', '1.3->1.4', '1.4->2.0'], 'm.bak')
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .archive import Archive
from .class_migrations import ClassMigrations
from .config import config_documents
from .container import Opened
from .describe import ConfigSummary, Description, NodeSummary, PayloadSummary, jsonable
from .detect import Detection
from .errors import LoadError
from .integrity import MANIFEST_SCHEMA, PICKLE_SCHEMA
from .layout import (
    COMPRESSED_SUFFIX,
    CONFIG_FILE_NAME,
    PICKLE_SUFFIX,
    PROTOCOL_VERSION_FILE_NAME,
    REQUIREMENTS_FILE_NAME,
    SOURCE_FILE_NAME,
    STASH_FILE_NAME,
    STATE_DICT_DELIMETER,
    STATE_FILE_NAME,
    VERSION_FILE_NAME,
)
from .listing import Folder
from .migrate import LATEST, Migration, plan, run
from .payload import PayloadFile
from .peek import TensorInfo
from .pipeline import decode, inspected
from .problems import Problem
from .publish import exchange_keeping_backup, staging
from .revisions import info, pickle_schema
from .schema import schema_problems
from .store import fetched, is_url, shown, staged
from .tree import SaveTreeNode, _traverse_all_nodes, node_payload, tree_metadata
from .unpickle import Trust
from .validate import validate_description

BACKUP_NAME = re.compile(r"\.bak(\.\d+)?$")
"""What in-place upgrades name the originals: folder searches for upgrades skip them."""


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
    from .write import write_archive  # imports torch, which a dry run never needs

    trust = trust or Trust()
    with (
        fetched(source) as local,
        inspected(local, trust=trust, for_decoding=not dry_run) as inspection,
    ):
        revision = inspection.report.revision
        if revision is None:
            raise LoadError(f"{shown(source)}: no revision was detected")
        steps = plan(revision, to)
        result = UpgradeResult(
            _named(source),
            revision,
            to,
            [f"{s.source}->{s.target}" for s in steps],
            dry_run=dry_run,
        )
        if dry_run:
            return result
        decoded = decode(inspection, trust)
        container = inspection.opened.container
    upgraded = run(decoded, to, step_problems=step_problems, on_step=on_step)
    if class_migrations is not None:
        tree = class_migrations.apply_tree(upgraded.tree)
        result.classes = _moved_classes(upgraded.tree, tree)
        upgraded = dataclasses.replace(upgraded, tree=tree)
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
            with inspected(built, trust=trust):
                pass  # the new archive is valid, or `LoadError` lists its problems
            if in_place and not remote:
                result.backup = exchange_keeping_backup(built, target)
                final = target
            else:
                final = target.with_name(built.name)
                if final.exists() or final.is_symlink():
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


def _moved_classes(before: SaveTreeNode, after: SaveTreeNode) -> dict[str, str]:
    """Prefix -> new version of the nodes whose version changed (same tree shape)."""
    return {
        STATE_DICT_DELIMETER.join(path): new.version
        for (path, old), (_, new) in zip(
            _traverse_all_nodes(before), _traverse_all_nodes(after), strict=True
        )
        if new.version != old.version
    }


def step_problems(archive: Archive) -> list[Problem]:
    """The problems of `archive` as the writer of its revision would write it, judged in
    memory against that revision's schema (the per-step check of the migration chain).

    Raises what the writer would raise for what it cannot encode.
    """
    from .manifest import build_manifest

    if archive.layout == "pickle":
        return _pickle_problems(archive)
    if archive.revision == LATEST:
        manifest = build_manifest(
            archive.tree, archive.keep_vars, {}, (), archive.original_revision
        )
        return schema_problems(manifest, MANIFEST_SCHEMA)
    description = _expected_description(archive)
    return validate_description(description, trust=Trust(trusted=True)).problems


def _pickle_problems(archive: Archive) -> list[Problem]:
    from .manifest import pickle_payload

    state = archive.state()  # what the pickle writer flattens the tree into
    if archive.revision == LATEST:
        payload = pickle_payload(state, archive.original_revision)
        view = {
            key: dict.fromkeys(part) if key == "state" else jsonable(part)
            for key, part in payload.items()
        }
        return schema_problems(view, PICKLE_SCHEMA)
    summary = _payload_summary(_in_memory("archive.pkl"), state, "pickle", True)
    document = {
        "layout": "pickle",
        "container": "pickle",
        "member_prefix": None,
        "protocol": 1,
        "revision": archive.revision,
        "file": {"name": "archive.pkl", "size": 1},
        "state": summary.as_json(),
    }
    return schema_problems(document, pickle_schema(1))


def _expected_description(archive: Archive) -> Description:
    """The description of `archive` as its revision's folder writer lays it out: every
    file it writes (payloads are never empty), the texts, the payloads' contents."""
    row = info(archive.revision)
    source = _in_memory("archive")
    formats: dict[str, Any] = {}
    nodes = []
    metadata = tree_metadata(archive.tree, archive.keep_vars)
    for path, node in _traverse_all_nodes(archive.tree):
        relative = "/".join(path)
        texts = {
            VERSION_FILE_NAME: f"{node.class_name}:{node.version}",
            SOURCE_FILE_NAME: node.source_code,
            CONFIG_FILE_NAME: node.config,
            PROTOCOL_VERSION_FILE_NAME: str(row.protocol),
        }
        files = {name: len(text.encode("utf-8")) for name, text in texts.items()}
        files |= {STATE_FILE_NAME: 1, STASH_FILE_NAME: 1}
        if not path and row.requirements:
            files[REQUIREMENTS_FILE_NAME] = len((archive.requirements or "").encode("utf-8"))
        folder = Folder(
            relative, source / relative, dict(sorted(files.items())), (), tuple(node.children)
        )
        stash_format = "zip" if row.torch_stash else "pickle"
        payload = node_payload(node, {} if path else metadata)
        state = _payload_summary(folder.path / STATE_FILE_NAME, payload, "zip", row.node_metadata)
        stash = _payload_summary(
            folder.path / STASH_FILE_NAME, node.object_stash, stash_format, False
        )
        formats[folder.join(STATE_FILE_NAME)] = "zip"
        formats[folder.join(STASH_FILE_NAME)] = stash_format
        config = ConfigSummary(config_documents(node.config), empty=not node.config.strip())
        nodes.append(NodeSummary(folder, texts, config, state, stash))
    detection = Detection("folder", row.protocol, row.name, formats)
    opened = Opened(source, "folder", source)
    return Description(opened, detection, [node.folder for node in nodes], nodes)


def _in_memory(name: str) -> Path:
    return Path(f"<{name} in memory>")


def _payload_summary(path: Path, value: Any, kind: Any, metadata: bool) -> PayloadSummary:
    """What peeking the file the writer makes of `value` would find."""
    import torch  # `value` holds tensors: torch is imported already

    summary = PayloadSummary(PayloadFile(path, 1, kind))
    summary.type = type(value).__name__
    summary.keys = [str(key) for key in value]
    summary.tensors = {
        str(key): TensorInfo(str(item.dtype).removeprefix("torch."), tuple(item.shape))
        for key, item in value.items()
        if isinstance(item, torch.Tensor)
    }
    summary.value_types = {
        str(key): type(item).__name__
        for key, item in value.items()
        if not isinstance(item, torch.Tensor)
    }
    recorded = getattr(value, "_metadata", None)
    summary.metadata = jsonable(recorded) if metadata and recorded is not None else None
    return summary

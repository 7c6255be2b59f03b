"""The one pipeline: open -> detect -> describe -> validate -> decode -> migrate.

Every operation runs these stages in this order, each once: `validate` and `inspect`
stop after validation (and never import torch), loads decode and migrate, upgrades
decode, migrate and write. A save folder is walked once, each payload file is sniffed
and read once (small ones whole: peeking and decoding share the bytes), each text file
is read once. The stages hand typed records to each other: `Inspection` (what
validation found, with the description the decoder reuses), then the decoded `Archive`.

>>> report = validate("fixtures/flambe-corpus/0.4.3-legacy/wrapper-tgz.tar.gz")
>>> report.valid, report.protocol, report.revision, report.nodes
(True, 1, '1.0', ['', 'counter', 'model', 'model.inner'])
>>> archive = load("fixtures/flambe-corpus/0.4.3-legacy/counter-dir")
>>> archive.revision, archive.original_revision, dict(archive.state())
('2.0', '1.0', {'count': 5, 'label': 'steps'})
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .archive import Archive
from .container import Opened, opened
from .describe import Decode, Description, describe
from .detect import Detection, detect, folder_protocol, payload_files
from .errors import LoadError
from .listing import Folder, walk
from .migrate import Migration, run
from .problems import Problem
from .read import Decoder, read_archive
from .report import Report
from .revisions import LATEST, REVISIONS, Revision
from .store import StoreError, fetched, is_url, shown
from .unpickle import Trust
from .validate import Validation, after_source, validate_description


@dataclass
class Inspection:
    """An archive opened, detected, described and validated."""

    opened: Opened
    detection: Detection
    report: Report
    description: Description | None = None
    """`None` when no revision was detected (then `report` says why)."""
    validation: Validation | None = None

    @property
    def original_revision(self) -> Revision | None:
        """The revision a protocol 2 archive was upgraded from, as it records it."""
        header: Any = None
        if self.validation is not None and self.validation.manifest is not None:
            header = self.validation.manifest
        elif self.description is not None and self.description.pickle is not None:
            header = self.description.pickle.header
        value = header.get("original_revision") if isinstance(header, dict) else None
        return next((name for name in REVISIONS if name == value), None)


def inspect(
    archive: Opened,
    *,
    strict: bool = False,
    trust: Trust | None = None,
    verify: bool = False,
    for_decoding: bool = False,
    decode: Decode | None = None,
) -> Inspection:
    """Detect, describe and validate an opened archive, reading each file once.

    Validation reads no tensor bytes but of files it hashes; `for_decoding` reads small
    payloads whole instead, so that decoding them reads nothing again, and `decode`
    describes torch payloads by decoding them (see `describe`).
    """
    folders: list[Folder] | None = None
    payloads = None
    protocol = None
    if archive.is_folder:
        folders = walk(archive.payload)
        protocol = folder_protocol(archive.payload)
        payloads = payload_files(folders, for_decoding)
    detection = detect(archive, folders, payloads, protocol)
    report = Report(
        os.fspath(archive.source),
        container=archive.container,
        layout=detection.layout,
        protocol=detection.protocol,
        revision=detection.revision,
    )
    if detection.revision is None:
        report.problems += [Problem("", "revision", reason) for reason in detection.reasons]
        return Inspection(archive, detection, report)
    description = describe(archive, detection, folders, payloads, for_decoding, decode)
    validation = validate_description(description, strict=strict, trust=trust, verify=verify)
    report.problems += validation.problems
    report.nodes = validation.nodes
    report.subtree = validation.subtree
    return Inspection(archive, detection, report, description, validation)


def validate(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    allow_globals: Iterable[str] = (),
) -> Report:
    """Check the archive at `path` (a local path or a URL); never raises for a bad archive.

    A store that cannot be read (see `flambe_compat.store`) gives a `store` problem.
    `strict` also flags what flambe tolerated: unknown extra files, class versions that
    are not `MAJOR.MINOR.PATCH`, an empty root config (`load()` could not rebuild it).
    Payloads naming globals outside the allow-list (plus `allow_globals`) are problems.
    """
    try:
        with fetched(path) as local, opened(local) as archive:
            report = inspect(archive, strict=strict, trust=Trust.of(allow_globals)).report
    except LoadError as error:
        rule = "store" if isinstance(error, StoreError) else "container"
        return Report(shown(path), problems=[Problem("", rule, after_source(error))])
    if is_url(path):
        report.source = shown(path)
    return report


@contextmanager
def inspected(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    trust: Trust | None = None,
    verify: bool = False,
    for_decoding: bool = False,
    decode: Decode | None = None,
) -> Iterator[Inspection]:
    """The inspection of a valid archive, open for the time of the block; `LoadError`
    listing every problem otherwise."""
    with opened(path) as archive:
        inspection = inspect(
            archive,
            strict=strict,
            trust=trust,
            verify=verify,
            for_decoding=for_decoding,
            decode=decode,
        )
        inspection.report.raise_for_problems()
        yield inspection


def decode(
    inspection: Inspection,
    trust: Trust,
    pickle_module: Any = pickle,
    map_location: Any = None,
    **load_args: Any,
) -> Archive:
    """The decoded `Archive` of a valid inspection (see `flambe_compat.read`)."""
    return read_archive(inspection, Decoder(trust, pickle_module, map_location, load_args))


def load(
    path: str | os.PathLike[str],
    *,
    trust: Trust | None = None,
    strict: bool = False,
    verify: bool = False,
    target: str = LATEST,
    pickle_module: Any = pickle,
    map_location: Any = None,
    on_step: Callable[[Migration], None] | None = None,
    **load_args: Any,
) -> Archive:
    """Open, validate and decode the archive at `path`, then migrate it to `target`."""
    decoder = Decoder(trust or Trust(), pickle_module, map_location, load_args)
    with inspected(
        path,
        strict=strict,
        trust=decoder.trust,
        verify=verify,
        for_decoding=True,
        decode=decoder.decode if decoder.describes else None,
    ) as inspection:
        archive = read_archive(inspection, decoder)
    return run(archive, target, on_step=on_step)

"""1.3 -> 1.4: from flambe 0.4.15 the root folder holds `requirements.txt`."""

from __future__ import annotations

import dataclasses

from flambe_compat.archive import Archive

SOURCE = "1.3"
TARGET = "1.4"


def migrate(archive: Archive) -> Archive:
    """Add the root `requirements.txt`, saying the environment of the save is unknown.

    flambe 0.4.15 began writing `pip freeze` of the saving environment next to the root
    state, for reproducibility. An older archive never recorded it, and the upgrading
    environment is not the saving one, so the file holds a single comment (a valid,
    empty requirements file) rather than a made-up list.
    """
    if archive.requirements is not None:
        return dataclasses.replace(archive, revision="1.4")
    original = archive.original_revision or archive.revision
    note = f"# not recorded: this archive was saved as revision {original}, before 1.4\n"
    return dataclasses.replace(archive, requirements=note, revision="1.4")

"""1.1 -> 1.2: flambe 0.4.7 names tar members from the save path's basename."""

from __future__ import annotations

import dataclasses

from flambe_compat.archive import Archive

SOURCE = "1.1"
TARGET = "1.2"


def migrate(archive: Archive) -> Archive:
    """Name the members of a compressed archive `NAME/...` instead of the whole save path.

    Before, `tar.add(path)` stored the path as given (`home/user/models/m/...`) and
    extraction recreated it below the working directory; the fix stores the basename.
    Nothing inside the archive changes: the writer packs the members by basename.
    """
    return dataclasses.replace(archive, revision="1.2")

"""2.0 -> 1.4: back to what flambe 0.4.18 reads."""

from __future__ import annotations

import dataclasses

from flambe_compat.archive import Archive

SOURCE = "2.0"
TARGET = "1.4"


def migrate(archive: Archive) -> Archive:
    """Downgrade to protocol 1 revision 1.4, for flambe 0.4.18 and older tools.

    Lost on the way: `manifest.json` (so the checksums, the writer, the creation time and
    the recorded original revision) and the guarantee that the archive was published
    atomically. Kept: every key, value and metadata entry; `protocol_version.txt` says 1
    again and payloads stay in torch's zip format, which flambe reads on torch >= 1.6.
    """
    return dataclasses.replace(archive, revision="1.4")

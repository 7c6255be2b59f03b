"""1.4 -> 2.0: flambe_compat's protocol 2."""

from __future__ import annotations

import dataclasses

from flambe_compat.archive import Archive

SOURCE = "1.4"
TARGET = "2.0"


def migrate(archive: Archive) -> Archive:
    """Move to protocol 2: a manifest, checksums, atomic writes, weights-only payloads.

    Protocol 1 had no way to tell a complete archive from a half-written one, no
    integrity check, and dill pickles that need `dill._dill._load_type` to load. The
    protocol 2 writer adds `manifest.json` (every node and file with size and sha256,
    written last as the commit marker), writes payloads in torch's zip format with the
    standard pickler (loadable with `weights_only=True` when plain) and records the
    original revision. The State is unchanged.
    """
    return dataclasses.replace(archive, revision="2.0")

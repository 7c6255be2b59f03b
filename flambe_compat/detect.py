"""Detection: what a payload file is, from its first bytes, without unpickling it.

>>> payload_format(b"PK\\x03\\x04...")
'zip'
>>> payload_format(b"\\x80\\x02}q\\x00.")
'pickle'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

PayloadFormat = Literal["zip", "legacy", "pickle", "unknown"]

ZIP_MAGIC = b"PK\x03\x04"
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
"""Pickle protocol 2, then `LONG1` of torch's magic number 0x1950a86a20f9469cfc6c."""
HEAD_SIZE = len(LEGACY_TORCH_MAGIC)


def payload_format(head: bytes) -> PayloadFormat:
    """The format of a payload from its first `HEAD_SIZE` bytes.

    `zip` and `legacy` are the two `torch.save` formats; `pickle` is a bare pickle
    (flambe's pickle-only archives, and 0.4.0-0.4.4 stashes).
    """
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(LEGACY_TORCH_MAGIC):
        return "legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def file_payload_format(path: Path) -> PayloadFormat:
    """`payload_format` of a file on disk."""
    with path.open("rb") as file:
        return payload_format(file.read(HEAD_SIZE))

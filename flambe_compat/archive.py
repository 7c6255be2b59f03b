"""`Archive`: a decoded archive, what the migration chain works on.

A flambe format revision changed how a save is encoded (stash pickling, tar member
names, where metadata is kept, `requirements.txt`, our manifest), much more than what it
holds. So an archive in memory is its `State` plus the few things a save of its
revision records beside the State; writers turn it back into files of that revision.

>>> from flambe_compat.tree import node_metadata
>>> s = State({"count": 1}); s._metadata = {"_flambe_directories": {""}, "": node_metadata("C")}
>>> Archive(s, revision="1.2", layout="folder").revision
'1.2'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .revisions import Revision
from .state import State


@dataclass(frozen=True)
class Archive:
    """A decoded archive of a given revision."""

    state: State
    revision: Revision
    layout: Literal["folder", "pickle"]
    requirements: str | None = None
    """The root `requirements.txt` (revision 1.4 on), verbatim."""
    original_revision: Revision | None = None
    """The revision the archive had before the migration chain first touched it."""

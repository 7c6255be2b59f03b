"""`Archive`: a decoded archive, what the migration chain works on.

A flambe format revision changed how a save is encoded (stash pickling, tar member
names, where metadata is kept, `requirements.txt`, our manifest), much more than what it
holds. So an archive in memory is its save tree (`flambe_compat.tree`) plus the few
things a save of its revision records beside the nodes; writers turn it back into files
of that revision. The flat `State` is built at the API edge only (`Archive.state`), and
a `State` handed in becomes an `Archive` there (`Archive.of_state`).

>>> from flambe_compat.tree import node_metadata
>>> s = State({"count": 1}); s._metadata = {"_flambe_directories": {""}, "": node_metadata("C")}
>>> archive = Archive.of_state(s, revision="1.2", layout="folder")
>>> archive.tree.class_name, archive.revision, dict(archive.state())
('C', '1.2', {'count': 1})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .layout import KEEP_VARS_KEY
from .revisions import Revision
from .state import State
from .tree import FlatOrder, SaveTreeNode, state_to_tree, tree_to_state

Layout = Literal["folder", "pickle"]


@dataclass(frozen=True)
class Archive:
    """A decoded archive of a given revision."""

    tree: SaveTreeNode
    revision: Revision
    layout: Layout
    requirements: str | None = None
    """The root `requirements.txt` (revision 1.4 on), verbatim."""
    original_revision: Revision | None = None
    """The revision the archive had before the migration chain first touched it."""
    keep_vars: bool | None = None
    """The `keep_vars` the tree was saved with, when recorded (pickles; folders from 1.3)."""
    order: FlatOrder | None = None
    """A pickle's order of keys, kept when its `State` is built again."""

    @classmethod
    def of_state(
        cls,
        state: State,
        revision: Revision,
        layout: Layout,
        requirements: str | None = None,
        original_revision: Revision | None = None,
    ) -> Archive:
        """The archive of a flat `State` (a pickle's, or one handed to a writer)."""
        return cls(
            state_to_tree(state),
            revision,
            layout,
            requirements,
            original_revision,
            state._metadata.get(KEEP_VARS_KEY),
            FlatOrder.of(state) if layout == "pickle" else None,
        )

    def state(self) -> State:
        """The flat `State` of the tree, as loading the archive gives it."""
        return tree_to_state(self.tree, self.keep_vars, self.order)

"""1.0 -> 1.1: flambe 0.4.5 writes `stash.pkl` with `torch.save`."""

from __future__ import annotations

import dataclasses

from flambe_compat.archive import Archive

SOURCE = "1.0"
TARGET = "1.1"


def migrate(archive: Archive) -> Archive:
    """Encode every node's object stash with `torch.save` instead of a bare dill pickle.

    flambe 0.4.0 - 0.4.4 dumped the stash with dill directly, so tensors in it were
    pickled by value through `torch.storage._load_from_bytes`; 0.4.5 switched to
    `torch.save` like `state.pt` (and 0.4.18 can no longer read the old stashes). The
    stash contents are unchanged: only the writer's encoding of `stash.pkl` differs.
    """
    return dataclasses.replace(archive, revision="1.1")

"""`State`: the flat, dotted-key state dict of a flambe object graph.

>>> s = State(); s["model.linear.weight"] = 1.0
>>> s._metadata = {"_flambe_directories": {""}, "keep_vars": False}
>>> list(s)
['model.linear.weight']
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class State(OrderedDict[str, Any]):
    """A state object for flambe: an `OrderedDict` with a `_metadata` dict.

    `_metadata` holds `_flambe_directories` (the set of Component prefixes),
    `keep_vars`, torch's per-module metadata and, per Component prefix, the
    `_flambe_version`, `_flambe_class`, `_flambe_source`, `_flambe_config` and
    optional `_flambe_stash` entries.
    """

    _metadata: dict[str, Any]

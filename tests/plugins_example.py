"""A `flambe-compat upgrade --plugins` module, as a user would write one (see test_upgrade_cli).

It registers, with the default registry, two class state migrations for classes that only
the CLI tests save: `Gauge` 1.x -> 2.0.0 renames its key `level` to `reading`, and
`Faulty` 1.x -> 2.0.0 always fails, to show that a failed upgrade leaves its source alone.
"""

from __future__ import annotations

from typing import Any

from flambe_compat import register_class_migration


@register_class_migration("Gauge", "1.x", "2.0.0")
def rename_level(state: dict[str, Any]) -> dict[str, Any]:
    """Gauge 2.0 calls its value `reading`."""
    state["reading"] = state.pop("level")
    return state


@register_class_migration("Faulty", "1.x", "2.0.0")
def always_fail(state: dict[str, Any]) -> dict[str, Any]:
    """A migration with a bug: it looks up a key that no Faulty state has."""
    state["value"] = state.pop("missing")
    return state

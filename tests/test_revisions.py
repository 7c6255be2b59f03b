"""The revision table: detection features, encodings, schemas and steps in one place."""

from __future__ import annotations

from itertools import chain, combinations, pairwise

import pytest

from flambe_compat.migrate import migrations, plan
from flambe_compat.resources import resource_path
from flambe_compat.revisions import (
    FEATURES,
    NODE_METADATA,
    RAW_STASH,
    REQUIREMENTS,
    REVISIONS,
    TABLE,
    WHOLE_PATH_MEMBERS,
    info,
    newer_than_known,
    revision_of,
)


def test_every_row_names_a_shipped_schema_and_step() -> None:
    for row in TABLE:
        assert resource_path("schemas", row.schema).is_file()
        if row.upgrade is not None:
            assert resource_path("migrations", f"{row.upgrade}.py").is_file()
    steps = [(step.source, step.target) for step in migrations()]
    upgrades = [(a.name, b.name) for a, b in pairwise(TABLE)]
    assert set(upgrades) <= set(steps)


def test_revisions_are_ordered_as_versions() -> None:
    assert [row.version for row in TABLE] == sorted(row.version for row in TABLE)
    assert REVISIONS == ("1.0", "1.1", "1.2", "1.3", "1.4", "2.0")
    assert newer_than_known("2.1") and newer_than_known("10.0")
    assert not newer_than_known("1.10") and not newer_than_known("not a version")


def test_encodings_follow_the_revisions() -> None:
    assert [row.name for row in TABLE if not row.torch_stash] == ["1.0"]
    assert [row.name for row in TABLE if row.node_metadata] == ["1.3", "1.4", "2.0"]
    assert [row.name for row in TABLE if row.requirements] == ["1.4", "2.0"]
    assert {row.protocol for row in TABLE} == {1, 2}


@pytest.mark.parametrize(
    ("shown", "revision"),
    [
        (set(), "1.2"),
        ({RAW_STASH}, "1.0"),
        ({RAW_STASH, WHOLE_PATH_MEMBERS}, "1.0"),
        ({WHOLE_PATH_MEMBERS}, "1.1"),
        ({NODE_METADATA}, "1.3"),
        ({REQUIREMENTS}, "1.4"),
        ({REQUIREMENTS, NODE_METADATA}, "1.4"),
        ({RAW_STASH, NODE_METADATA}, None),
        ({WHOLE_PATH_MEMBERS, REQUIREMENTS}, None),
    ],
)
def test_the_latest_revision_consistent_with_the_features(
    shown: set[str], revision: str | None
) -> None:
    found = revision_of(shown)
    assert (found.name if found else None) == revision


def test_every_feature_combination_gets_one_answer() -> None:
    subsets = chain.from_iterable(combinations(FEATURES, n) for n in range(len(FEATURES) + 1))
    for subset in subsets:
        row = revision_of(set(subset))
        assert row is None or (row.shows <= set(subset) <= row.may_show)


def test_plans_run_through_the_table() -> None:
    assert [f"{s.source}->{s.target}" for s in plan("1.0", "2.0")] == [
        f"{a.name}->{b.name}" for a, b in pairwise(TABLE)
    ]
    assert info("1.4").schema == "1.4.json"
    with pytest.raises(KeyError):
        info("1.5")

"""The format revisions, in one table: how each is detected, written, judged and migrated.

flambe's protocol 1 changed five times without saying so; protocol 2 is ours. For each
revision the table holds what an archive of it may show (the features detection reads
from names, small files and pickle opcodes), how its writer encodes a folder, the JSON
Schema that judges it and the migration step to the next revision. Revisions compare as
versions (`"1.10" > "1.3"`), never as strings.

>>> [r.name for r in TABLE if r.node_metadata]
['1.3', '1.4', '2.0']
>>> newer_than_known("1.10"), newer_than_known("1.3"), newer_than_known("3.0")
(False, False, True)
>>> revision_of({"requirements.txt (1.4)", "state.pt with _metadata (1.3+)"}).name
'1.4'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from packaging.version import InvalidVersion, Version

Revision = Literal["1.0", "1.1", "1.2", "1.3", "1.4", "2.0"]

RAW_STASH = "raw-pickle stash.pkl (1.0)"
WHOLE_PATH_MEMBERS = "tar members named by the whole save path (1.0-1.1)"
NODE_METADATA = "state.pt with _metadata (1.3+)"
REQUIREMENTS = "requirements.txt (1.4)"
FEATURES = (RAW_STASH, WHOLE_PATH_MEMBERS, NODE_METADATA, REQUIREMENTS)
"""What detection looks for in a protocol 1 folder, in the order reasons name them."""


@dataclass(frozen=True)
class RevisionInfo:
    """One revision: its detection features, write encoding, schema and migration step."""

    name: Revision
    flambe: str
    """The releases that wrote it."""
    protocol: int
    shows: frozenset[str]
    """Features its archives carry for sure: an archive showing them all may be it."""
    may_show: frozenset[str]
    """Every feature its archives can carry: an archive showing another one is not it."""
    torch_stash: bool
    """`stash.pkl` is a `torch.save` file (1.1 on), not a bare pickle."""
    node_metadata: bool
    """Each `state.pt` keeps its `_metadata` (1.3 on)."""
    requirements: bool
    """The root holds `requirements.txt` (1.4 on)."""
    schema: str
    """The schema judging a folder of this revision (pickles: `pickle_schema`)."""
    upgrade: str | None
    """The module of `migrations/` taking it to the next revision."""

    @property
    def version(self) -> Version:
        return Version(self.name)


def _info(
    name: Revision,
    flambe: str,
    shows: set[str],
    may_show: set[str],
    upgrade: str | None,
) -> RevisionInfo:
    version = Version(name)
    return RevisionInfo(
        name=name,
        flambe=flambe,
        protocol=version.major,
        shows=frozenset(shows),
        may_show=frozenset(shows | may_show),
        torch_stash=version >= Version("1.1"),
        node_metadata=version >= Version("1.3"),
        requirements=version >= Version("1.4"),
        schema=f"{name}.json",
        upgrade=upgrade,
    )


TABLE: tuple[RevisionInfo, ...] = (
    _info("1.0", "0.4.0 - 0.4.4", {RAW_STASH}, {WHOLE_PATH_MEMBERS}, "m1_0_to_1_1"),
    _info("1.1", "0.4.5 - 0.4.6", {WHOLE_PATH_MEMBERS}, set(), "m1_1_to_1_2"),
    _info("1.2", "0.4.7 - 0.4.11", set(), set(), "m1_2_to_1_3"),
    _info("1.3", "0.4.12 - 0.4.14", {NODE_METADATA}, set(), "m1_3_to_1_4"),
    _info("1.4", "0.4.15 - 0.4.18", {REQUIREMENTS}, {NODE_METADATA}, "m1_4_to_2_0"),
    _info("2.0", "flambe_compat", set(), set(), None),
)
"""Every revision we know, oldest first (DESIGN.md section 2)."""
DOWNGRADES = ("m2_0_to_1_4",)
"""Steps back to older revisions, for older readers."""
REVISIONS: tuple[Revision, ...] = tuple(info.name for info in TABLE)
LATEST: Revision = REVISIONS[-1]
FLAMBE_READABLE: Revision = "1.4"
"""The newest revision flambe 0.4.18 reads."""
PICKLE_REVISIONS: dict[int, Revision] = {1: "1.4", 2: "2.0"}
"""flambe's pickle-only format never changed: protocol 1 pickles are reported as 1.4 (1.1
when tar members carry a whole path)."""


def info(name: str) -> RevisionInfo:
    """The row of revision `name`; `KeyError` for one we do not know."""
    for row in TABLE:
        if row.name == name:
            return row
    raise KeyError(name)


def pickle_schema(protocol: int | None) -> str:
    """The schema judging a pickle-only archive of `protocol`."""
    return "pickle-1.json" if protocol == 1 else "pickle-2.0.json"


def revision_of(shown: set[str]) -> RevisionInfo | None:
    """The latest protocol 1 revision consistent with the features a folder shows."""
    fitting = [
        row for row in TABLE if row.protocol == 1 and row.shows <= shown and shown <= row.may_show
    ]
    return max(fitting, key=lambda row: row.version, default=None)


def newer_than_known(name: str) -> bool:
    """Whether `name` is a version later than every revision we know."""
    try:
        return Version(name) > info(LATEST).version
    except InvalidVersion:
        return False

"""Problems: what is wrong with an archive, as data (rendered only at the edge).

>>> p = Problem("model/state.pt", "decode", "cannot be decoded (truncated)")
>>> p.render("m.flambe")
'm.flambe: model/state.pt: cannot be decoded (truncated) [decode]'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One broken rule: the file it concerns (relative to the archive), the rule, a message."""

    path: str
    rule: str
    message: str

    def render(self, source: str) -> str:
        where = f"{source}: {self.path}" if self.path else source
        return f"{where}: {self.message} [{self.rule}]"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

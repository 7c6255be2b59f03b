"""`Report`: the verdict on one archive, as data, rendered at the edge.

>>> from flambe_compat.problems import Problem
>>> report = Report("m.flambe", problems=[Problem("state.pt", "decode", "truncated")])
>>> print(report.render())
m.flambe: invalid (1 problem)
  m.flambe: state.pt: truncated [decode]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import LoadError
from .problems import Problem
from .revisions import Revision


@dataclass
class Report:
    """The verdict on one archive: what it is, and every problem found."""

    source: str
    container: str | None = None
    layout: Literal["folder", "pickle"] | None = None
    protocol: int | None = None
    revision: Revision | None = None
    nodes: list[str] = field(default_factory=list)
    subtree: bool = False
    """A node folder of a saved tree (`checkpoint/model`), which flambe loaded on its own."""
    problems: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    def render(self) -> str:
        """Human-readable lines: a summary, then one line per problem."""
        if self.valid:
            kind = self.packing()
            subtree = ", a sub-tree" if self.subtree else ""
            return (
                f"{self.source}: valid (protocol {self.protocol} revision {self.revision}, "
                f"{kind}, {len(self.nodes)} node{'s' * (len(self.nodes) != 1)}{subtree})"
            )
        lines = [
            f"{self.source}: invalid ({len(self.problems)} problem"
            f"{'s' * (len(self.problems) != 1)})"
        ]
        lines += [f"  {problem.render(self.source)}" for problem in self.problems]
        return "\n".join(lines)

    def packing(self) -> str:
        """`folder`, `pickle`, or either one `in tar.gz`."""
        if not self.container or self.container == self.layout:
            return self.layout or ""
        return f"{self.layout} in {self.container}"

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "valid": self.valid,
            "container": self.container,
            "layout": self.layout,
            "protocol": self.protocol,
            "revision": self.revision,
            "nodes": self.nodes,
            **({"subtree": True} if self.subtree else {}),
            "problems": [problem.as_json() for problem in self.problems],
        }

    def raise_for_problems(self) -> None:
        """Raise a `LoadError` listing every problem, if there is any."""
        if self.problems:
            listing = "\n".join(f"  {p.render(self.source)}" for p in self.problems)
            raise LoadError(f"{self.source}: invalid archive\n{listing}")

"""flambe's `Field` interface: `setup` on a dataset's columns, `process` per example.

>>> class Length(Field):
...     def process(self, example: str) -> int:
...         return len(example)
>>> Length().process("abc")
3
"""

from __future__ import annotations

from typing import Any

from ...component import Component


class Field(Component):
    """Turns raw examples into tensors; `setup` may first learn from the data."""

    def setup(self, *data: Any) -> None:
        """Learn from all the data (e.g. a vocabulary); safe to call several times."""

    def process(self, *example: Any) -> Any:
        """Turn one example's columns into a tensor or a collection of tensors."""
        raise NotImplementedError

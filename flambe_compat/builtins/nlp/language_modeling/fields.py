"""flambe's `LMField`: a `TextField` that returns the sequence and its shift by one.

>>> field = LMField(vocabulary=["<pad>", "<unk>", "a", "b"])
>>> [t.tolist() for t in field.process("a b a")]
[[2, 3], [3, 2]]
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ...field.text import TextField


class LMField(TextField):
    """Process text to `(tokens[:-1], tokens[1:])`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def process(self, example: Any) -> tuple[Tensor, Tensor]:
        """The numericalized example without its last token, and without its first."""
        ret: Any = super().process(example)
        return ret[:-1], ret[1:]

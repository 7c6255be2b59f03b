"""flambe's `LabelTokenizer`: one label, or several split on a separator.

>>> LabelTokenizer(multilabel_sep=",")("a,b")
['a', 'b']
>>> LabelTokenizer()("a,b")
['a,b']
"""

from __future__ import annotations

from .tokenizer import Tokenizer


class LabelTokenizer(Tokenizer):
    """Split multi-label strings on `multilabel_sep` when it is given."""

    def __init__(self, multilabel_sep: str | None = None) -> None:
        self.multilabel_sep = multilabel_sep

    def tokenize(self, example: str) -> list[str]:
        """The labels in `example`."""
        sep = self.multilabel_sep
        return example.split(sep) if sep else [example]

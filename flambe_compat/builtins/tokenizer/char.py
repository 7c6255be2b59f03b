"""flambe's `CharTokenizer`: one token per character.

>>> CharTokenizer()("ab c")
['a', 'b', ' ', 'c']
"""

from __future__ import annotations

from .tokenizer import Tokenizer


class CharTokenizer(Tokenizer):
    """Split a string into its characters."""

    def tokenize(self, example: str) -> list[str]:
        """The characters of `example`."""
        return list(example)

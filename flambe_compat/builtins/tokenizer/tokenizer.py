"""flambe's `Tokenizer` interface: a callable Component from a string to a list of strings.

>>> class Spaces(Tokenizer):
...     def tokenize(self, example: str) -> list[str]:
...         return example.split(" ")
>>> Spaces()("a b")
['a', 'b']
"""

from __future__ import annotations

from ...component import Component


class Tokenizer(Component):
    """Implement `tokenize`; calling the tokenizer tokenizes."""

    def tokenize(self, example: str) -> list[str]:
        """The tokens of `example`."""
        raise NotImplementedError

    def __call__(self, example: str) -> list[str]:
        """Tokenize `example`."""
        return self.tokenize(example)

"""flambe's `BPETokenizer` (0.4.6 to 0.4.13): byte-pair encoding with `fastBPE`.

It needs the optional `fastBPE` package; without it, building one is a `LoadError`.

>>> BPETokenizer.__name__
'BPETokenizer'
"""

from __future__ import annotations

from typing import Any

from .._optional import require
from .tokenizer import Tokenizer


class BPETokenizer(Tokenizer):
    """Subword tokens from a fastBPE codes file."""

    def __init__(self, codes_path: str) -> None:
        self.codes_path = codes_path
        self.bpe: Any = require("fastBPE", type(self).__name__).fastBPE(codes_path)

    def tokenize(self, example: str) -> list[str]:
        """The BPE subword tokens of `example`."""
        encoded: str = self.bpe.apply([example])[0]
        return encoded.split(" ")

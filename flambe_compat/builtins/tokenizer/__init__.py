"""flambe.tokenizer: whitespace, character and label tokenizers; NLTK and BPE ones optional.

>>> CharTokenizer()("hi"), WordTokenizer()("hi there")
(['h', 'i'], ['hi', 'there'])
"""

from __future__ import annotations

from .char import CharTokenizer
from .label import LabelTokenizer
from .subword import BPETokenizer
from .tokenizer import Tokenizer
from .word import NGramsTokenizer, NLTKWordTokenizer, WordTokenizer

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "LabelTokenizer",
    "NGramsTokenizer",
    "NLTKWordTokenizer",
    "Tokenizer",
    "WordTokenizer",
]

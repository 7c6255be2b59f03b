"""flambe.nlp.fewshot: the prototypical text classifier.

>>> PrototypicalTextClassifier.__name__
'PrototypicalTextClassifier'
"""

from __future__ import annotations

from .model import PrototypicalTextClassifier

__all__ = ["PrototypicalTextClassifier"]

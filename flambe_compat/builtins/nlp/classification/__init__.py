"""flambe.nlp.classification: the text classifier (its datasets are not ported).

>>> TextClassifier.__name__
'TextClassifier'
"""

from __future__ import annotations

from .model import TextClassifier

__all__ = ["TextClassifier"]

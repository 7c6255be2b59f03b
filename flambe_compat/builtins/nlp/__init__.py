"""flambe.nlp: classification, language modeling, few-shot; transformers not ported.

>>> from flambe_compat.builtins import nlp
>>> nlp.classification.TextClassifier.__name__
'TextClassifier'
"""

from __future__ import annotations

from . import classification, fewshot, language_modeling, transformers

__all__ = ["classification", "fewshot", "language_modeling", "transformers"]

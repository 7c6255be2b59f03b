"""flambe.nlp.language_modeling: the language model and its field (datasets not ported).

>>> LanguageModel.__name__, LMField.__name__
('LanguageModel', 'LMField')
"""

from __future__ import annotations

from .fields import LMField
from .model import LanguageModel

__all__ = ["LMField", "LanguageModel"]

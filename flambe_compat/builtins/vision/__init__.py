"""flambe.vision.

>>> from flambe_compat.builtins.vision import classification
>>> classification.ImageClassifier.__name__
'ImageClassifier'
"""

from __future__ import annotations

from . import classification

__all__ = ["classification"]

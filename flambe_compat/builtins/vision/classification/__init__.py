"""flambe.vision.classification: the image classifier (the MNIST dataset is not ported).

>>> ImageClassifier.__name__
'ImageClassifier'
"""

from __future__ import annotations

from .model import ImageClassifier

__all__ = ["ImageClassifier"]

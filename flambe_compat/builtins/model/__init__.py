"""flambe.model: logistic regression.

>>> LogisticRegression(2).encoder.seq[0].out_features
1
"""

from __future__ import annotations

from .logistic_regression import LogisticRegression

__all__ = ["LogisticRegression"]

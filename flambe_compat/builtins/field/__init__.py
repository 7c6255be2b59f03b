"""flambe.field: text, label and bag-of-words fields.

>>> LabelField(labels=["neg", "pos"]).process("pos").item()
1
"""

from __future__ import annotations

from .bow import BoWField
from .field import Field
from .label import LabelField
from .text import EmbeddingsInformation, TextField

__all__ = ["BoWField", "EmbeddingsInformation", "Field", "LabelField", "TextField"]

"""flambe's built-in classes on current PyTorch, laid out as flambe laid them out.

`flambe_compat.builtins.X` mirrors `flambe.X` (`nn`, `nlp.classification`,
`nlp.language_modeling`, `nlp.fewshot`, `nlp.transformers`, `vision.classification`,
`field`, `tokenizer`), so importing this package registers every class under flambe's
own tag (`!TextClassifier`, `!Embeddings.from_pretrained`, ...).

>>> import torch
>>> from flambe_compat.builtins.nn import MLPEncoder
>>> MLPEncoder(4, 2)(torch.zeros(3, 4)).shape
torch.Size([3, 2])
"""

from __future__ import annotations

from . import field, nlp, nn, tokenizer, vision

__all__ = ["field", "nlp", "nn", "tokenizer", "vision"]

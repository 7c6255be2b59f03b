"""flambe's `LanguageModel`: per-position predictions, optionally tied to the embeddings.

With `tie_weights`, the output layer's `weight` becomes the very Parameter found at
`embedder.<tie_weight_attr>.weight` (flambe's default attribute is `embedding`; for its
own `Embeddings` that is `embedding.token_embedding`). 0.4.3 could not tie weights.

>>> import torch
>>> from flambe_compat.builtins.nn import Embedder, Embeddings, MLPEncoder
>>> embedder = Embedder(Embeddings(10, 4), MLPEncoder(4, 4), padding_idx=None)
>>> model = LanguageModel(embedder, torch.nn.Linear(4, 10), tie_weights=True,
...                       tie_weight_attr="embedding.token_embedding")
>>> model.output_layer.weight is embedder.embedding.token_embedding.weight
True
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ...nn.module import Module


class LanguageModel(Module):
    """Predict each position; with a target, only the non-padding positions, flattened."""

    def __init__(
        self,
        embedder: nn.Module,
        output_layer: nn.Module,
        dropout: float = 0,
        pad_index: int = 0,
        tie_weights: bool = False,
        tie_weight_attr: str = "embedding",
    ) -> None:
        super().__init__()
        self.embedder = embedder
        self.output_layer = output_layer
        self.drop = nn.Dropout(dropout)
        self.pad_index = pad_index
        self.tie_weights = tie_weights
        if tie_weights:
            module: Any = self.embedder
            for attr in tie_weight_attr.split("."):
                module = getattr(module, attr)
            self.output_layer.weight = module.weight

    def forward(self, data: Tensor, target: Tensor | None = None) -> Any:
        """Predictions `[S x B x V]`, or flat `(predictions, targets)` without padding."""
        outputs = self.embedder(data)
        encoding = outputs[0] if isinstance(outputs, tuple) else outputs
        if target is None:
            return self.output_layer(self.drop(encoding))
        flat_mask = (target != self.pad_index).view(-1)
        flat_encodings = encoding.reshape(-1, encoding.size(2))[flat_mask]
        flat_targets = target.contiguous().view(-1)[flat_mask]
        return self.output_layer(self.drop(flat_encodings)), flat_targets

"""flambe's `TextClassifier`: an embedder, dropout, and an output layer.

>>> import torch
>>> from flambe_compat.builtins.nn import Embedder, Embeddings, MLPEncoder, SoftmaxLayer
>>> from flambe_compat.builtins.nn import AvgPooling
>>> embedder = Embedder(Embeddings(10, 4), MLPEncoder(4, 4), pooling=AvgPooling(), padding_idx=None)
>>> TextClassifier(embedder, SoftmaxLayer(4, 3))(torch.tensor([[1, 2]])).shape
torch.Size([1, 3])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ...nn.module import Module


class TextClassifier(Module):
    """Encode with `embedder`, then classify the encoding with `output_layer`."""

    def __init__(self, embedder: nn.Module, output_layer: nn.Module, dropout: float = 0) -> None:
        super().__init__()
        self.embedder = embedder
        self.output_layer = output_layer
        self.drop = nn.Dropout(dropout)

    def forward(self, data: Tensor, target: Tensor | None = None) -> Any:
        """Predictions, or `(predictions, target)` when a target is given."""
        outputs = self.embedder(data)
        encoding = outputs[0] if isinstance(outputs, tuple) else outputs
        pred = self.output_layer(self.drop(encoding))
        return (pred, target) if target is not None else pred

"""flambe's `ImageClassifier`: an encoder, flattened, then an output layer.

>>> import torch
>>> from flambe_compat.builtins.nn import CNNEncoder, MLPEncoder
>>> model = ImageClassifier(CNNEncoder(1, [2]), MLPEncoder(2 * 3 * 3, 4))
>>> model(torch.ones(5, 1, 5, 5)).shape
torch.Size([5, 4])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ...nn.module import Module


class ImageClassifier(Module):
    """Encode images, flatten all but the batch dimension, and classify."""

    def __init__(self, encoder: nn.Module, output_layer: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.output_layer = output_layer

    def forward(self, data: Tensor, target: Tensor | None = None) -> Any:
        """Predictions, or `(predictions, target)` when a target is given."""
        pred = self.output_layer(torch.flatten(self.encoder(data), 1))
        return (pred, target) if target is not None else pred

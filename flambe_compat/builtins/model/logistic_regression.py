"""flambe's `LogisticRegression`: `sigmoid(W v + b)` through a one-layer `MLPEncoder`.

>>> import torch
>>> model = LogisticRegression(3)
>>> probability, target = model(torch.zeros(2, 3), torch.tensor([1, 0]))
>>> probability.shape, target.dtype
(torch.Size([2, 1]), torch.float32)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..nn.mlp import MLPEncoder
from ..nn.module import Module


class LogisticRegression(Module):
    """The probability of the positive class for each input vector."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.encoder = MLPEncoder(
            input_size, output_size=1, n_layers=1, output_activation=nn.Sigmoid()
        )

    def forward(self, data: Tensor, target: Tensor | None = None) -> Any:
        """`[B x input_size]` to `[B x 1]`; with a target, also the target as floats."""
        encoding = self.encoder(data)
        return (encoding, target.float()) if target is not None else encoding

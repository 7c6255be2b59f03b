"""flambe's `SoftmaxLayer`: an `MLPEncoder` ending in a (log-)softmax.

>>> import torch
>>> layer = SoftmaxLayer(4, 3)
>>> layer(torch.ones(2, 4)).exp().sum(dim=-1).round().tolist()
[1.0, 1.0]
"""

from __future__ import annotations

from torch import Tensor, nn

from ._softmax_dim import ImplicitSoftmax
from .mlp import MLPEncoder
from .module import Module


class SoftmaxLayer(Module):
    """A classifier head: log-softmax over the last dimension, or softmax without `take_log`."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        mlp_layers: int = 1,
        mlp_dropout: float = 0.0,
        mlp_hidden_activation: nn.Module | None = None,
        take_log: bool = True,
    ) -> None:
        super().__init__()
        softmax = nn.LogSoftmax(dim=-1) if take_log else ImplicitSoftmax()
        self.mlp = MLPEncoder(
            input_size=input_size,
            output_size=output_size,
            n_layers=mlp_layers,
            dropout=mlp_dropout,
            hidden_activation=mlp_hidden_activation,
            output_activation=softmax,
        )

    def forward(self, data: Tensor) -> Tensor:
        """`[* x input_size]` to `[* x output_size]` (log-)probabilities."""
        out: Tensor = self.mlp(data)
        return out

"""flambe's `MLPEncoder`: a feed-forward stack held in `seq`.

>>> import torch
>>> MLPEncoder(4, 2, n_layers=3, hidden_size=8)(torch.ones(5, 4)).shape
torch.Size([5, 2])
"""

from __future__ import annotations

from torch import Tensor, nn

from .module import Module


class MLPEncoder(Module):
    """`n_layers` linear layers; hidden activation and dropout after each hidden one."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        n_layers: int = 1,
        dropout: float = 0.0,
        output_activation: nn.Module | None = None,
        hidden_size: int | None = None,
        hidden_activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if n_layers == 1 or hidden_size is None:
            hidden_size = input_size
        if n_layers > 1:
            previous = input_size
            for _ in range(n_layers - 1):
                layers.append(nn.Linear(previous, hidden_size))
                if hidden_activation is not None:
                    layers.append(hidden_activation)
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
                previous = hidden_size
        layers.append(nn.Linear(hidden_size, output_size))
        if output_activation is not None:
            layers.append(output_activation)
        self.seq = nn.Sequential(*layers)

    def forward(self, data: Tensor) -> Tensor:
        """`[* x input_size]` to `[* x output_size]`."""
        out: Tensor = self.seq(data)
        return out

"""flambe's `CNNEncoder`: a stack of 1-, 2- or 3-d convolution blocks.

Each block is `[conv, pooling (if given), activation, dropout]`. flambe's block builder
tested `batch_norm is None` where it meant the opposite, so no release ever added batch
normalisation: the `batch_norm` argument is accepted and, as in flambe, has no effect,
which keeps the parameter names (`cnn.<block>.0.weight`) those checkpoints hold.

>>> import torch
>>> CNNEncoder(1, [4, 2], conv_dim=1)(torch.ones(2, 1, 9)).shape
torch.Size([2, 2, 5])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from .module import Module

_BY_DIM: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def conv_block(
    conv_mod: nn.Module, activation: nn.Module, pooling: nn.Module | None, dropout: float
) -> nn.Sequential:
    """One convolution block, laid out as flambe laid it out."""
    mods = [conv_mod]
    if pooling:
        mods.append(pooling)
    mods.append(activation)
    mods.append(nn.Dropout(dropout))
    return nn.Sequential(*mods)


class CNNEncoder(Module):
    """Convolutions from `input_channels` through each of `channels`."""

    def __init__(
        self,
        input_channels: int,
        channels: Sequence[int],
        conv_dim: int = 2,
        kernel_size: int | Sequence[int | Sequence[int]] = 3,
        activation: nn.Module | None = None,
        pooling: nn.Module | None = None,
        dropout: float = 0,
        batch_norm: bool = True,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__()
        if conv_dim not in _BY_DIM:
            raise ValueError(f"Invalid conv_dim value {conv_dim}. Values 1, 2, 3 supported")
        if not isinstance(kernel_size, int) and len(kernel_size) != len(channels):
            raise ValueError("Kernel size list should have same length as channels list")
        conv = _BY_DIM[conv_dim]
        activation = activation or nn.ReLU()
        layers = []
        previous = input_channels
        for i, out_channels in enumerate(channels):
            kernel: Any = kernel_size if isinstance(kernel_size, int) else kernel_size[i]
            if not isinstance(kernel, int):
                if len(kernel) != conv_dim:
                    raise ValueError("Kernel size tuple should have same length as conv_dim")
                kernel = tuple(kernel)
            block = conv_block(
                conv(previous, out_channels, kernel, stride, padding), activation, pooling, dropout
            )
            layers.append(block)
            previous = out_channels
        self.cnn = nn.Sequential(*layers)

    def forward(self, data: Tensor) -> Tensor:
        """Run the convolution blocks."""
        out: Tensor = self.cnn(data)
        return out

"""The bases of flambe's distance and mean modules (used by prototypical networks).

>>> MeanModule(detach_mean=True).detach_mean
True
"""

from __future__ import annotations

from torch import Tensor

from ..module import Module


class DistanceModule(Module):
    """Pairwise distances between the rows of two matrices."""

    def forward(self, mat_1: Tensor, mat_2: Tensor) -> Tensor:
        """`[n_1 x F]` and `[n_2 x F]` to `[n_1 x n_2]` distances."""
        raise NotImplementedError


class MeanModule(Module):
    """The mean point of a set of rows, in some geometry."""

    def __init__(self, detach_mean: bool = False) -> None:
        super().__init__()
        self.detach_mean = detach_mean

    def forward(self, data: Tensor) -> Tensor:
        """`[n x F]` to the `[F]` mean point."""
        raise NotImplementedError

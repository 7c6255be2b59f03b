"""Squared euclidean distance and the arithmetic mean.

>>> import torch
>>> EuclideanDistance()(torch.zeros(1, 2), torch.ones(3, 2)).tolist()
[[2.0, 2.0, 2.0]]
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distance import DistanceModule, MeanModule


class EuclideanDistance(DistanceModule):
    """Squared euclidean distance between each row of `mat_1` and each of `mat_2`."""

    def forward(self, mat_1: Tensor, mat_2: Tensor) -> Tensor:
        """`[n_1 x F]` and `[n_2 x F]` to `[n_1 x n_2]`."""
        columns = [torch.sum((mat_1 - mat_2[i]) ** 2, dim=1) for i in range(mat_2.size(0))]
        return torch.stack(columns, dim=1)


class EuclideanMean(MeanModule):
    """The arithmetic mean of the rows."""

    def forward(self, data: Tensor) -> Tensor:
        """`[n x F]` to `[F]`."""
        return data.mean(0)

"""Cosine distance and the mean of normalised rows.

>>> import torch
>>> CosineDistance()(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])).tolist()
[[1.0]]
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distance import DistanceModule, MeanModule


class CosineDistance(DistanceModule):
    """One minus the cosine similarity of each pair of rows."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, mat_1: Tensor, mat_2: Tensor) -> Tensor:
        """`[n_1 x F]` and `[n_2 x F]` to `[n_1 x n_2]`."""
        w1 = mat_1.norm(p=2, dim=1, keepdim=True)
        w2 = mat_2.norm(p=2, dim=1, keepdim=True)
        similarity = torch.mm(mat_1, mat_2.t()) / (w1 * w2.t()).clamp(min=self.eps)
        distance: Tensor = 1.0 - similarity
        return distance


class CosineMean(MeanModule):
    """The mean of the L2-normalised rows."""

    def forward(self, data: Tensor) -> Tensor:
        """`[n x F]` to `[F]`."""
        normalised: Tensor = data / data.norm(dim=1, keepdim=True)
        return normalised.mean(0)

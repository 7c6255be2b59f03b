"""`nn.Softmax()` without a dimension, as flambe built it, minus torch's warning.

torch picks dimension 0 for 0-, 1- and 3-dimensional inputs and 1 otherwise.

>>> import torch
>>> ImplicitSoftmax()(torch.zeros(2, 2)).sum(dim=1).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def implicit_dim(ndim: int) -> int:
    """The dimension torch's `softmax(dim=None)` normalises over."""
    return 0 if ndim in (0, 1, 3) else 1


class ImplicitSoftmax(nn.Module):
    """Softmax (or log-softmax) over torch's implicit dimension."""

    def __init__(self, log: bool = False) -> None:
        super().__init__()
        self.log = log

    def forward(self, data: Tensor) -> Tensor:
        """Normalise `data` over its implicit dimension."""
        dim = implicit_dim(data.dim())
        return torch.log_softmax(data, dim) if self.log else torch.softmax(data, dim)

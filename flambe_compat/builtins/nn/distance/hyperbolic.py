"""Distance and mean on the hyperboloid model, as flambe computed them.

>>> import torch
>>> points = torch.tensor([[0.0, 0.5], [0.3, 0.1], [0.2, 0.2]])
>>> HyperbolicDistance()(points, points[:2]).shape
torch.Size([3, 2])
>>> HyperbolicMean().eval()(points).shape
torch.Size([2])
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distance import DistanceModule, MeanModule

EPSILON = 1e-5


def arccosh(x: Tensor) -> Tensor:
    """A numerically stable arccosh (inputs clamped to at least 1 + EPSILON)."""
    x = torch.clamp(x, min=1 + EPSILON)
    return torch.log(x) + torch.log1p(torch.sqrt(x * x - 1) / x)


def mdot(x: Tensor, y: Tensor) -> Tensor:
    """The Minkowski inner product of the rows."""
    m = x.new_ones(1, x.size(1))
    m[0, 0] = -1
    return torch.sum(m * x * y, 1, keepdim=True)


def dist(x: Tensor, y: Tensor) -> Tensor:
    """The hyperbolic distance between the rows of `x` and `y`."""
    return arccosh(-mdot(x, y))


def project(x: Tensor) -> Tensor:
    """Lift `[n x F]` points onto the hyperboloid in `F + 1` dimensions."""
    return torch.cat([torch.sqrt(1.0 + torch.sum(x * x, 1, keepdim=True)), x], 1)


def log_map(x: Tensor, y: Tensor) -> Tensor:
    """The logarithmic map of `y` at `x`."""
    d = dist(x, y)
    return (d / torch.sinh(d)) * (y - torch.cosh(d) * x)


def norm(x: Tensor) -> Tensor:
    """The Minkowski norm of the rows."""
    return torch.sqrt(torch.abs(mdot(x, x)))


def exp_map(x: Tensor, y: Tensor) -> Tensor:
    """The exponential map of the tangent vector `y` at `x`."""
    n = torch.clamp(norm(y), min=EPSILON)
    return torch.cosh(n) * x + (torch.sinh(n) / n) * y


def loss(x: Tensor, y: Tensor) -> Tensor:
    """The sum of squared hyperbolic distances."""
    return torch.sum(dist(x, y) ** 2)


class HyperbolicDistance(DistanceModule):
    """Squared hyperbolic distance between each pair of rows (flambe's formula)."""

    def forward(self, mat_1: Tensor, mat_2: Tensor) -> Tensor:
        """`[n_1 x F]` and `[n_2 x F]` to `[n_1 x n_2]`."""
        mat_1_x_0 = torch.sqrt(1 + mat_1.pow(2).sum(dim=1, keepdim=True))
        mat_2_x_0 = torch.sqrt(1 + mat_2.pow(2).sum(dim=1, keepdim=True))
        left = mat_1_x_0.mm(mat_2_x_0.t())
        right = mat_1[:, 1:].mm(mat_2[:, 1:].t())
        return arccosh(left - right).pow(2)


class HyperbolicMean(MeanModule):
    """The mean point on the hyperboloid, by Riemannian gradient steps."""

    def forward(self, data: Tensor) -> Tensor:
        """`[n x F]` to `[F]`: 5 steps in training mode, 100 in evaluation mode."""
        n_iter = 5 if self.training else 100
        projected = project(data)
        mean = torch.mean(projected, 0, keepdim=True)
        mean = mean / norm(mean)
        r = 1e-2
        for _ in range(n_iter):
            g = -2 * torch.mean(log_map(mean, projected), 0, keepdim=True)
            mean = exp_map(mean, -r * g)
            mean = mean / norm(mean)
        return mean.squeeze()[1:]

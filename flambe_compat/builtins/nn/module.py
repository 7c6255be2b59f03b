"""flambe's `Module`: a Component that is a `torch.nn.Module`, with parameter helpers.

>>> import torch
>>> class Twice(Module):
...     def __init__(self) -> None:
...         super().__init__()
...         self.linear = torch.nn.Linear(2, 2)
...     def forward(self, data: torch.Tensor) -> torch.Tensor:
...         return 2 * self.linear(data)
>>> Twice().num_parameters()
6
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from ...component import Component


class Module(Component, nn.Module):  # type: ignore[misc]  # compile: see Component
    """Base class of flambe's modules: torch's interface plus norms and clipping."""

    @property
    def named_trainable_params(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The named parameters with `requires_grad=True`."""
        return ((name, p) for name, p in self.named_parameters() if p.requires_grad)

    @property
    def trainable_params(self) -> Iterator[nn.Parameter]:
        """The parameters with `requires_grad=True`."""
        return (p for p in self.parameters() if p.requires_grad)

    @property
    def gradient_norm(self) -> float:
        """The L2 norm of the gradients of the trainable parameters."""
        grads = [p.grad for p in self.trainable_params if p.grad is not None]
        return math.sqrt(sum(grad.norm(p=2).item() ** 2 for grad in grads))

    @property
    def parameter_norm(self) -> float:
        """The L2 norm of the trainable parameters."""
        return math.sqrt(sum(p.norm(p=2).item() ** 2 for p in self.trainable_params))

    def num_parameters(self, trainable: bool = False) -> int:
        """The number of scalars in the (trainable) parameters."""
        params = self.trainable_params if trainable else self.parameters()
        return sum(p.numel() for p in params)

    def clip_params(self, threshold: float) -> None:
        """Clamp every trainable parameter to [-threshold, threshold]."""
        with torch.no_grad():
            for param in self.trainable_params:
                param.clamp_(min=-threshold, max=threshold)

    def clip_gradient_norm(self, threshold: float) -> None:
        """Clip the norm of the trainable parameters' gradients to `threshold`."""
        params = [p for p in self.trainable_params if p.grad is not None]
        nn.utils.clip_grad_norm_(params, threshold)

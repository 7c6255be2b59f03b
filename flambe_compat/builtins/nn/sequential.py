"""flambe's `Sequential`: `nn.Sequential` built from keyword arguments.

flambe's own version passed a list to `nn.Sequential`, which torch refuses, so no flambe
checkpoint holds one; this one runs the modules in the order given. Each module is both
an attribute (`<name>.*`) and a step of `seq` (`seq.<i>.*`), as flambe laid them out.

>>> import torch
>>> Sequential(first=torch.nn.Linear(2, 3), second=torch.nn.ReLU())(torch.ones(1, 2)).shape
torch.Size([1, 3])
"""

from __future__ import annotations

from torch import Tensor, nn

from .module import Module


class Sequential(Module):
    """Run the keyword-argument modules one after the other."""

    def __init__(self, **kwargs: nn.Module) -> None:
        super().__init__()
        for name, module in kwargs.items():
            setattr(self, name, module)
        self.seq = nn.Sequential(*kwargs.values())

    def forward(self, data: Tensor) -> Tensor:
        """Run the modules in order."""
        out: Tensor = self.seq(data)
        return out

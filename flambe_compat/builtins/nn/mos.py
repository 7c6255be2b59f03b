"""flambe's `MixtureOfSoftmax` output layer, as flambe wrote it.

Its `k` component layers live in a plain list, so (in flambe and here) they are not
submodules: they are neither saved in a checkpoint nor restored from one, and each
construction draws them afresh. Only `pi_w` is state.

>>> sorted(MixtureOfSoftmax(4, 3, k=2).state_dict())
['pi_w.seq.0.bias', 'pi_w.seq.0.weight']
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._softmax_dim import ImplicitSoftmax
from .mlp import MLPEncoder
from .module import Module


class MixtureOfSoftmax(Module):
    """Mixture of `k` softmax layers weighted by `pi_w`, over `[S x B x H]` inputs."""

    def __init__(self, input_size: int, output_size: int, k: int = 1, take_log: bool = True):
        super().__init__()
        self.pi_w = MLPEncoder(input_size, k)
        self.softmax = ImplicitSoftmax()
        self.layers = [MLPEncoder(input_size, output_size) for _ in range(k)]
        self.tanh = nn.Tanh()
        self.activation = ImplicitSoftmax(log=take_log)

    def forward(self, data: Tensor) -> Tensor:
        """Mix the `k` layers' outputs by the weights `pi_w` gives each position."""
        weights = self.softmax(self.pi_w(data))
        out = [weights[:, :, i] * self.tanh(layer(data)) for i, layer in enumerate(self.layers)]
        mixed: Tensor = self.activation(torch.cat(out, dim=0).sum(dim=0))
        return mixed

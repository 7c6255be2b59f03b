"""flambe's pooling modules: `[B x S x H]` sequences (and a `[B x S]` mask) to `[B x H]`.

>>> import torch
>>> data = torch.arange(12.0).reshape(1, 4, 3)
>>> LastPooling()(data, torch.tensor([[1, 1, 0, 0]])).tolist()
[[3.0, 4.0, 5.0]]
>>> AvgPooling()(data).tolist()
[[4.5, 5.5, 6.5]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .module import Module


def _default_padding_mask(data: Tensor) -> Tensor:
    return torch.ones((data.size(0), data.size(1))).to(data)


def _sum_with_padding_mask(data: Tensor, padding_mask: Tensor) -> Tensor:
    return (data * padding_mask.unsqueeze(2)).sum(dim=1)


class FirstPooling(Module):
    """The first hidden state of each sequence."""

    def forward(self, data: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """`[B x S x H]` to `[B x H]`."""
        return data[:, 0, :]


class LastPooling(Module):
    """The last non-padding hidden state of each sequence."""

    def forward(self, data: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """`[B x S x H]` to `[B x H]`."""
        if padding_mask is None:
            lengths = torch.tensor([data.size(1)] * data.size(0)).long()
        else:
            lengths = padding_mask.long().sum(dim=1)
        return data[torch.arange(data.size(0)).long(), lengths - 1, :]


class SumPooling(Module):
    """The sum of the non-padding hidden states."""

    def forward(self, data: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """`[B x S x H]` to `[B x H]`."""
        if padding_mask is None:
            padding_mask = _default_padding_mask(data)
        return _sum_with_padding_mask(data, padding_mask)


class AvgPooling(Module):
    """The mean of the non-padding hidden states."""

    def forward(self, data: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """`[B x S x H]` to `[B x H]`."""
        if padding_mask is None:
            padding_mask = _default_padding_mask(data)
        value_count = padding_mask.sum(dim=1).unsqueeze(1)
        return _sum_with_padding_mask(data, padding_mask) / value_count


class StructuredSelfAttentivePooling(Module):
    """Multi-head self-attentive pooling (Lin et al. 2017, arXiv:1703.03130)."""

    def __init__(
        self,
        input_size: int,
        attention_heads: int = 16,
        attention_units: Sequence[int] = (300,),
        output_activation: nn.Module | None = None,
        hidden_activation: nn.Module | None = None,
        is_biased: bool = False,
        input_dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_drop: nn.Module = (
            nn.Dropout(input_dropout) if input_dropout > 0.0 else nn.Identity()
        )
        dimensions = [input_size, *attention_units, attention_heads]
        layers: list[nn.Module] = []
        for i in range(len(dimensions) - 2):
            layers.append(nn.Linear(dimensions[i], dimensions[i + 1], bias=is_biased))
            layers.append(nn.Tanh() if hidden_activation is None else hidden_activation)
        layers.append(nn.Linear(dimensions[-2], dimensions[-1], bias=False))
        if attention_dropout > 0.0:
            layers.append(nn.Dropout(attention_dropout))
        self.mlp = nn.Sequential(*layers)
        self.output_activation = (
            nn.Softmax(dim=1) if output_activation is None else output_activation
        )

    def _compute_attention(self, data: Tensor, mask: Tensor | None) -> Tensor:
        """`[B x S x HEADS]` attention weights, masked positions near zero."""
        batch_size, num_encs, dim = data.shape
        data = self.in_drop(data)
        logits = self.mlp(data.reshape(-1, dim)).reshape(batch_size, num_encs, -1)
        if mask is not None:
            weights = mask.unsqueeze(2).float()
            logits = logits * weights + (1.0 - weights) * -1e20
        attention: Tensor = self.output_activation(logits)
        return attention

    def forward(self, data: Tensor, mask: Tensor | None = None) -> Tensor:
        """`[B x S x H]` to `[B x H]`: the heads' attended sums, averaged."""
        attention = self._compute_attention(data, mask)
        return torch.bmm(attention.transpose(1, 2), data).mean(dim=1)


class GeneralizedPooling(StructuredSelfAttentivePooling):
    """Vector-based generalized pooling (Chen et al. 2018, arXiv:1806.09828)."""

    def __init__(
        self,
        input_size: int,
        attention_units: Sequence[int] = (300,),
        output_activation: nn.Module | None = None,
        hidden_activation: nn.Module | None = None,
        is_biased: bool = True,
        input_dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            input_size=input_size,
            attention_heads=input_size,
            attention_units=attention_units,
            output_activation=output_activation,
            hidden_activation=nn.ReLU() if hidden_activation is None else hidden_activation,
            is_biased=is_biased,
            input_dropout=input_dropout,
            attention_dropout=attention_dropout,
        )

    def forward(self, data: Tensor, mask: Tensor | None = None) -> Tensor:
        """`[B x S x H]` to `[B x H]`: per-dimension attention, averaged over positions."""
        return (self._compute_attention(data, mask) * data).mean(dim=1)

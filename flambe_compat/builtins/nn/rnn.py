"""flambe's `RNNEncoder` (LSTM, GRU or SRU) and the deprecated `PooledRNNEncoder`.

Padded batches go through torch's `PackedSequence`; `rnn_type: sru` needs the optional
`sru` package and is a `LoadError` without it. Inputs are batch first; with a mask,
outputs stop at the longest sequence (torch's `pad_packed_sequence`).

>>> import torch
>>> encoder = RNNEncoder(3, 5, rnn_type="gru")
>>> output, state = encoder(torch.ones(2, 4, 3), padding_mask=torch.tensor([[1, 1, 1, 0]] * 2))
>>> output.shape, state.shape
(torch.Size([2, 3, 5]), torch.Size([1, 2, 5]))
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .._optional import require
from .module import Module

logger = logging.getLogger(__name__)


class RNNEncoder(Module):
    """A multi-layer LSTM, GRU or SRU over `[B x S x E]` inputs."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        n_layers: int = 1,
        rnn_type: str = "lstm",
        dropout: float = 0,
        bidirectional: bool = False,
        layer_norm: bool = False,
        highway_bias: float = 0,
        rescale: bool = True,
        enforce_sorted: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.rnn_type = rnn_type
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.enforce_sorted = enforce_sorted
        self.output_size = 2 * hidden_size if bidirectional else hidden_size
        self.rnn: nn.Module
        if rnn_type in ("lstm", "gru"):
            if kwargs:
                logger.warning("The following %r will be ignored: they are SRU only", kwargs)
            rnn_fn = nn.LSTM if rnn_type == "lstm" else nn.GRU
            self.rnn = rnn_fn(
                input_size=input_size,
                hidden_size=hidden_size,
                num_layers=n_layers,
                dropout=dropout,
                bidirectional=bidirectional,
            )
        elif rnn_type == "sru":
            sru = require("sru", "RNNEncoder(rnn_type='sru')")
            try:
                self.rnn = sru.SRU(
                    input_size,
                    hidden_size,
                    num_layers=n_layers,
                    dropout=dropout,
                    bidirectional=bidirectional,
                    layer_norm=layer_norm,
                    rescale=rescale,
                    highway_bias=highway_bias,
                    **kwargs,
                )
            except TypeError:
                raise ValueError(f"Unkown kwargs passed to SRU: {kwargs}") from None
        else:
            raise ValueError(f"Unkown rnn type: {rnn_type}, use of of: gru, sru, lstm")

    def forward(
        self,
        data: Tensor,
        state: Tensor | None = None,
        padding_mask: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Any]:
        """Encode `[B x S x E]` data; `mask` is 0.4.3's name of `padding_mask`.

        Returns the `[B x S x H]` outputs and the final state.
        """
        if padding_mask is None and mask is not None:
            padding_mask = mask
        data = data.transpose(0, 1)
        if padding_mask is None:
            output, state = self.rnn(data, state)
        else:
            padding_mask = padding_mask.transpose(0, 1).bool()
            if self.rnn_type == "sru":
                output, state = self.rnn(data, state, mask_pad=~padding_mask)
            else:
                lengths = padding_mask.long().sum(dim=0)
                packed = nn.utils.rnn.pack_padded_sequence(
                    data, lengths, enforce_sorted=self.enforce_sorted
                )
                output, state = self.rnn(packed, state)
                output, _ = nn.utils.rnn.pad_packed_sequence(output)
        return output.transpose(0, 1).contiguous(), state


class PooledRNNEncoder(Module):
    """An `RNNEncoder` whose outputs are pooled: `first`, `last`, `average` or `sum`."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        n_layers: int = 1,
        rnn_type: str = "lstm",
        dropout: float = 0,
        bidirectional: bool = False,
        layer_norm: bool = False,
        highway_bias: float = 0,
        rescale: bool = True,
        pooling: str = "last",
    ) -> None:
        super().__init__()
        warnings.warn(
            "PooledRNNEncoder is deprecated, please use the Pooling module in the Embedder object",
            DeprecationWarning,
            stacklevel=2,
        )
        self.pooling = pooling
        self.rnn = RNNEncoder(
            input_size=input_size,
            hidden_size=hidden_size,
            n_layers=n_layers,
            rnn_type=rnn_type,
            dropout=dropout,
            bidirectional=bidirectional,
            layer_norm=layer_norm,
            highway_bias=highway_bias,
            rescale=rescale,
        )
        self.output_size = 2 * hidden_size if bidirectional else hidden_size

    def forward(
        self,
        data: Tensor,
        state: Tensor | None = None,
        padding_mask: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Encode `[B x S x E]` data to `[B x H]`.

        flambe built a `[B x S x H]` mask of ones when none was given, and divided the
        `average` by an unsqueezed count; both only worked by accident of shapes. Here the
        default mask is `[B x S]` and the average is per sequence, which is what flambe
        computed whenever its shapes lined up.
        """
        if padding_mask is None and mask is not None:
            padding_mask = mask
        output, _ = self.rnn(data, state=state, padding_mask=padding_mask)
        if padding_mask is None:
            weights = torch.ones(output.shape[:2], dtype=output.dtype, device=output.device)
        else:
            weights = padding_mask.to(output.dtype)
        batch = torch.arange(output.size(0)).long()
        pooled: Tensor
        if self.pooling == "average":
            total = (output * weights.unsqueeze(2)).sum(dim=1)
            pooled = total / weights.sum(dim=1, keepdim=True)
        elif self.pooling == "sum":
            pooled = (output * weights.unsqueeze(2)).sum(dim=1)
        elif self.pooling == "last":
            pooled = output[batch, weights.long().sum(dim=1) - 1, :]
        elif self.pooling == "first":
            pooled = output[batch, 0, :]
        else:
            raise ValueError(f"Invalid pooling type: {self.pooling}")
        return pooled

"""flambe's Transformer variants whose feed-forward block is an SRU cell.

They need the optional `sru` package (its `SRUCell`); without it, building one is a
`LoadError` naming the package. Parameter names follow flambe (`layers.<i>.sru...`).
As in `transformer`, flambe's `TransformerSRU` passed `dim_feedforward` and the layer
count to its stacks in swapped positions, which is kept, and its `forward` read an unset
`d_model`, which is fixed.

>>> from flambe_compat import LoadError
>>> try:
...     TransformerSRUEncoder(4, 4, 2, 1, 8)
... except LoadError as error:
...     "sru" in str(error)
... else:
...     True
True
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from .._optional import require
from .module import Module
from .transformer import _keep_to_ignore, _xavier_init


def _sru_cell(user: str, *args: Any, **kwargs: Any) -> nn.Module:
    cell: nn.Module = require("sru", user).SRUCell(*args, **kwargs)
    return cell


class TransformerSRUEncoderLayer(Module):
    """Self-attention, then an SRU cell and a projection, each with residual and norm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        sru_dropout: float | None = None,
        bidirectional: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.sru = _sru_cell(
            type(self).__name__,
            d_model,
            dim_feedforward,
            dropout,
            sru_dropout or dropout,
            bidirectional=bidirectional,
            has_skip_term=False,
            **kwargs,
        )
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(
        self,
        src: Tensor,
        state: Tensor | None = None,
        src_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """`[S x B x E]` to `[S x B x E]` and the SRU state."""
        attended = self.self_attn(
            src, src, src, attn_mask=src_mask, key_padding_mask=_keep_to_ignore(padding_mask)
        )[0]
        src = self.norm1(src + self.dropout1(attended))
        fed, state = self.sru(src, state, mask_pad=padding_mask)
        src = self.norm2(src + self.dropout2(self.linear2(fed)))
        return src, state


class TransformerSRUDecoderLayer(Module):
    """Self-attention, attention over the memory, then an SRU cell and a projection."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        sru_dropout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.sru = _sru_cell(
            type(self).__name__,
            d_model,
            dim_feedforward,
            dropout,
            sru_dropout or dropout,
            bidirectional=False,
            has_skip_term=False,
            **kwargs,
        )
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        state: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """`[T x B x E]` (and `[S x B x E]` memory) to `[T x B x E]`."""
        attended = self.self_attn(
            tgt, tgt, tgt, attn_mask=tgt_mask, key_padding_mask=_keep_to_ignore(padding_mask)
        )[0]
        tgt = self.norm1(tgt + self.dropout1(attended))
        attended = self.multihead_attn(
            tgt, memory, memory, attn_mask=memory_mask, key_padding_mask=memory_key_padding_mask
        )[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        fed, _ = self.sru(tgt, state, mask_pad=padding_mask)
        out: Tensor = self.norm3(tgt + self.dropout3(self.linear2(fed)))
        return out


class TransformerSRUEncoder(Module):
    """A stack of SRU encoder layers; returns the outputs and the stacked states."""

    def __init__(
        self,
        input_size: int = 512,
        d_model: int = 512,
        nhead: int = 8,
        num_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        sru_dropout: float | None = None,
        bidirectional: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.d_model = d_model
        if input_size != d_model:
            self.proj = nn.Linear(input_size, d_model)
        layer = TransformerSRUEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, sru_dropout, bidirectional
        )
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        _xavier_init(self)

    def forward(
        self,
        src: Tensor,
        state: Tensor | None = None,
        mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """`[B x S x input_size]` to `[B x S x d_model]` and `[L x ...]` states."""
        output = src.transpose(0, 1)
        if self.input_size != self.d_model:
            output = self.proj(output)
        states = []
        for i, layer in enumerate(self.layers):
            output, new_state = layer(
                output,
                state=None if state is None else state[i],
                src_mask=mask,
                padding_mask=padding_mask,
            )
            states.append(new_state)
        return output.transpose(0, 1), torch.stack(states, dim=0)


class TransformerSRUDecoder(Module):
    """A stack of SRU decoder layers."""

    def __init__(
        self,
        input_size: int = 512,
        d_model: int = 512,
        nhead: int = 8,
        num_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        sru_dropout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.d_model = d_model
        if input_size != d_model:
            self.proj = nn.Linear(input_size, d_model)
        layer = TransformerSRUDecoderLayer(d_model, nhead, dim_feedforward, dropout, sru_dropout)
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        _xavier_init(self)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        state: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """`[B x T x input_size]` and `[S x B x d_model]` memory to `[B x T x d_model]`."""
        output = tgt.transpose(0, 1)
        if self.input_size != self.d_model:
            output = self.proj(output)
        for i, layer in enumerate(self.layers):
            output = layer(
                output,
                memory,
                state=None if state is None else state[i],
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                padding_mask=padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
            )
        return output.transpose(0, 1)


class TransformerSRU(Module):
    """SRU encoder and decoder stacks; the encoder's states seed the decoder."""

    def __init__(
        self,
        input_size: int = 512,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        sru_dropout: float | None = None,
        bidrectional: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.encoder = TransformerSRUEncoder(
            input_size,
            d_model,
            nhead,
            dim_feedforward,
            num_encoder_layers,
            dropout,
            sru_dropout,
            bidrectional,
            **kwargs,
        )
        self.decoder = TransformerSRUDecoder(
            input_size,
            d_model,
            nhead,
            dim_feedforward,
            num_encoder_layers,
            dropout,
            sru_dropout,
            **kwargs,
        )

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Batch-first `src` and `tgt` to `[B x T x d_model]`."""
        if src.size(0) != tgt.size(0):
            raise RuntimeError("the batch number of src and tgt must be equal")
        memory, state = self.encoder(src, mask=src_mask, padding_mask=src_key_padding_mask)
        out: Tensor = self.decoder(
            tgt,
            memory.transpose(0, 1),
            state=state,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
        )
        return out

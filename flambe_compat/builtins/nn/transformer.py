"""flambe's Transformer: encoder and decoder stacks over batch-first `[B x S x E]` inputs.

Parameter names follow flambe (`layers.<i>.self_attn...`, `proj` when `input_size`
differs from `d_model`). Padding masks are True for tokens to keep. flambe's
`Transformer` built its decoder with `num_encoder_layers` layers, which is kept (it
decides the parameter names), and its `forward` read a `d_model` it never set, so it
could not run; here it compares against the encoder's `d_model` and checks the batch
dimension of batch-first inputs.

>>> import torch
>>> encoder = TransformerEncoder(4, d_model=8, nhead=2, num_layers=1, dim_feedforward=16)
>>> encoder.eval()(torch.ones(3, 5, 4)).shape
torch.Size([3, 5, 8])
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .module import Module


def _keep_to_ignore(padding_mask: Tensor | None) -> Tensor | None:
    """flambe's masks mark tokens to keep; torch's attention wants those to ignore."""
    return None if padding_mask is None else ~padding_mask.bool()


def _xavier_init(module: nn.Module) -> None:
    for param in module.parameters():
        if param.dim() > 1:
            nn.init.xavier_uniform_(param)


class TransformerEncoderLayer(Module):
    """Self-attention then feed-forward, each with residual and layer norm (post-norm)."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(
        self,
        src: Tensor,
        memory: Tensor | None = None,
        src_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """`[S x B x E]` to `[S x B x E]`; `memory` is accepted and unused, as in flambe."""
        attended = self.self_attn(
            src, src, src, attn_mask=src_mask, key_padding_mask=_keep_to_ignore(padding_mask)
        )[0]
        src = self.norm1(src + self.dropout1(attended))
        fed = self.linear2(self.dropout(F.relu(self.linear1(src))))
        out: Tensor = self.norm2(src + self.dropout2(fed))
        return out


class TransformerDecoderLayer(Module):
    """Self-attention, attention over the memory, then feed-forward (post-norm)."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
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
            tgt,
            memory,
            memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        fed = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        out: Tensor = self.norm3(tgt + self.dropout3(fed))
        return out


class TransformerEncoder(Module):
    """A stack of `num_layers` encoder layers, with a projection when sizes differ."""

    def __init__(
        self,
        input_size: int = 512,
        d_model: int = 512,
        nhead: int = 8,
        num_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.d_model = d_model
        if input_size != d_model:
            self.proj = nn.Linear(input_size, d_model)
        layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout)
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        _xavier_init(self)

    def forward(
        self,
        src: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """`[B x S x input_size]` to `[B x S x d_model]`."""
        output = src.transpose(0, 1)
        if self.input_size != self.d_model:
            output = self.proj(output)
        for layer in self.layers:
            output = layer(output, memory=memory, src_mask=mask, padding_mask=padding_mask)
        return output.transpose(0, 1)


class TransformerDecoder(Module):
    """A stack of `num_layers` decoder layers, with a projection when sizes differ."""

    def __init__(
        self,
        input_size: int,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.d_model = d_model
        if input_size != d_model:
            self.proj = nn.Linear(input_size, d_model)
        layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout)
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        _xavier_init(self)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """`[B x T x input_size]` and `[S x B x d_model]` memory to `[B x T x d_model]`."""
        output = tgt.transpose(0, 1)
        if self.input_size != self.d_model:
            output = self.proj(output)
        for layer in self.layers:
            output = layer(
                output,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                padding_mask=padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
            )
        return output.transpose(0, 1)


class Transformer(Module):
    """Encoder and decoder stacks ("Attention Is All You Need")."""

    def __init__(
        self,
        input_size: int,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        # flambe passed dim_feedforward as num_layers and num_layers as dim_feedforward
        # (positional arguments in the wrong order); the parameter shapes depend on it.
        self.encoder = TransformerEncoder(
            input_size, d_model, nhead, dim_feedforward, num_encoder_layers, dropout
        )
        self.decoder = TransformerDecoder(
            input_size, d_model, nhead, dim_feedforward, num_encoder_layers, dropout
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
        """Batch-first `src` `[B x S x E]` and `tgt` `[B x T x E]` to `[B x T x d_model]`."""
        if src.size(0) != tgt.size(0):
            raise RuntimeError("the batch number of src and tgt must be equal")
        d_model = self.encoder.d_model
        if src.size(2) != self.encoder.input_size or tgt.size(2) != self.decoder.input_size:
            raise RuntimeError(f"the feature number of src and tgt must match ({d_model})")
        memory = self.encoder(src, mask=src_mask, padding_mask=src_key_padding_mask)
        out: Tensor = self.decoder(
            tgt,
            memory.transpose(0, 1),
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
        )
        return out


def generate_square_subsequent_mask(sz: int) -> Tensor:
    """A `[sz x sz]` causal mask: `-inf` above the diagonal, 0 elsewhere."""
    mask = (torch.triu(torch.ones(sz, sz)) == 1).t()
    return mask.float().masked_fill(~mask, float("-inf")).masked_fill(mask, 0.0)

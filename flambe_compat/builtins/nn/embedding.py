"""flambe's `Embeddings` (token plus optional positional embeddings) and `Embedder`.

`Embeddings` loads both layouts flambe wrote: 0.4.3's (an `nn.Embedding` subclass whose
table is `weight`) and later ones (`token_embedding.weight`, `pos_embedding.weight`).
`Embedder` takes 0.4.3's `pad_index` as well as the later `padding_idx`.

>>> import torch
>>> embeddings = Embeddings(10, 4, positional_encoding=True)
>>> embeddings(torch.tensor([[1, 2], [3, 0]])).shape
torch.Size([2, 2, 4])
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ...component import registrable_factory
from .module import Module

_UNSET: Any = object()


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """The frozen sine/cosine position table flambe used when positions are not learned."""
    position = torch.arange(0, length, dtype=torch.float).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


def _legacy_weight_key(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """Move 0.4.3's `weight` (an `nn.Embedding` subclass) to `token_embedding.weight`."""
    old, new = prefix + "weight", prefix + "token_embedding.weight"
    if old in state_dict and new not in state_dict:
        state_dict[new] = state_dict.pop(old)


class Embeddings(Module):
    """`nn.Embedding` with optional sinusoidal or learned positional embeddings.

    Inputs are `[S x B]` indices; positions count along the first dimension.
    The argument `positonal_max_length` keeps flambe's spelling.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = 0,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        positional_encoding: bool = False,
        positional_learned: bool = False,
        positonal_max_length: int = 5000,
        _weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.num_positions = positonal_max_length
        self.token_embedding = nn.Embedding(
            num_embeddings,
            embedding_dim,
            padding_idx,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            sparse,
            _weight=_weight,
        )
        self.pos_embedding: nn.Embedding | None = None
        if positional_learned and not positional_encoding:
            raise ValueError("postional_encoding is False, but positonal_learned is True")
        if positional_encoding and positional_learned:
            self.pos_embedding = nn.Embedding(positonal_max_length, embedding_dim)
        elif positional_encoding:
            table = sinusoidal_table(positonal_max_length, embedding_dim)
            self.pos_embedding = nn.Embedding.from_pretrained(  # type: ignore[no-untyped-call]
                table, freeze=True
            )
        self.register_load_state_dict_pre_hook(_legacy_weight_key)  # type: ignore[no-untyped-call]

    @registrable_factory
    @classmethod
    def from_pretrained(
        cls,
        embeddings: Tensor,
        freeze: bool = True,
        padding_idx: int | None = 0,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        positional_encoding: bool = False,
        positional_learned: bool = False,
        positonal_max_length: int = 5000,
        positonal_embeddings: Tensor | None = None,
        positonal_freeze: bool = True,
        paddinx_idx: int | None = _UNSET,
    ) -> Embeddings:
        """Embeddings initialised from a `[num_embeddings x dim]` matrix.

        `paddinx_idx` is 0.4.3's misspelt argument (its default there was None).
        """
        if paddinx_idx is not _UNSET:
            padding_idx = paddinx_idx
        if embeddings.dim() != 2:
            raise ValueError("Embeddings parameter is expected to be 2-dimensional")
        if positonal_embeddings is not None:
            if positonal_embeddings.dim() != 2:
                raise ValueError("Positonal embeddings parameter is expected to be 2-dimensional")
            if positonal_embeddings.size() != embeddings.size():
                raise ValueError("Both pretrained matrices must have the same dimensions")
        rows, cols = embeddings.shape
        embedding = cls(
            num_embeddings=rows,
            embedding_dim=cols,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            scale_grad_by_freq=scale_grad_by_freq,
            sparse=sparse,
            positional_encoding=positional_encoding or positonal_embeddings is not None,
            positional_learned=positional_learned,
            positonal_max_length=positonal_max_length,
        )
        embedding.token_embedding.weight.data = embeddings
        embedding.token_embedding.weight.requires_grad = not freeze
        if positonal_embeddings is not None and embedding.pos_embedding is not None:
            embedding.pos_embedding.weight.data = positonal_embeddings
            embedding.pos_embedding.weight.requires_grad = not positonal_freeze
        return embedding

    def forward(self, data: Tensor) -> Tensor:
        """`[S x B]` indices to `[S x B x E]` embeddings (plus positions)."""
        out: Tensor = self.token_embedding(data)
        if self.pos_embedding is not None:
            column = torch.arange(data.size(0)).unsqueeze(1)
            positions = column.repeat(1, data.size(1)).to(data)
            out = out + self.pos_embedding(positions)
        return out


class Embedder(Module):
    """Embeds token indices, then encodes them (and optionally pools the encoding).

    With `padding_idx` (0.4.3: `pad_index`) set, the encoder gets the mask of non-padding
    positions: as `padding_mask=` (bool), or for an Embedder written by 0.4.3 as `mask=`
    (float), which is what encoders of that release accepted.
    """

    def __init__(
        self,
        embedding: nn.Module,
        encoder: nn.Module,
        pooling: nn.Module | None = None,
        embedding_dropout: float = 0,
        padding_idx: int | None = 0,
        return_mask: bool = False,
        pad_index: int | None = _UNSET,
    ) -> None:
        super().__init__()
        self._legacy_mask = pad_index is not _UNSET
        if self._legacy_mask:
            padding_idx = pad_index
        self.embedding = embedding
        self.dropout = nn.Dropout(embedding_dropout)
        self.encoder = encoder
        self.pooling = pooling
        self.padding_idx = padding_idx
        self.return_mask = return_mask

    @property
    def pad_index(self) -> int | None:
        """0.4.3's name of `padding_idx`."""
        return self.padding_idx

    def forward(self, data: Tensor) -> Any:
        """Encode `data`; a tuple when the encoder returns a state or `return_mask` is set."""
        embedded = self.dropout(self.embedding(data))
        padding_mask: Tensor | None = None
        if self.padding_idx is None:
            encoding = self.encoder(embedded)
        elif self._legacy_mask:
            padding_mask = data != self.padding_idx
            encoding = self.encoder(embedded, mask=padding_mask.float())
        else:
            padding_mask = data != self.padding_idx
            encoding = self.encoder(embedded, padding_mask=padding_mask)
        if self.pooling is not None:
            encoding = encoding[0] if isinstance(encoding, tuple) else encoding
            encoding = self.pooling(encoding, padding_mask)
        if self.return_mask:
            return encoding, padding_mask
        return encoding

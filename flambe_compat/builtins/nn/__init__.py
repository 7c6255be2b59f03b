"""flambe.nn, reimplemented on current PyTorch: the same names, arguments and parameters.

>>> import torch
>>> from flambe_compat.builtins.nn import Embedder, Embeddings, RNNEncoder, LastPooling
>>> embedder = Embedder(Embeddings(10, 4), RNNEncoder(4, 3), pooling=LastPooling())
>>> embedder(torch.tensor([[1, 2, 0], [3, 0, 0]])).shape
torch.Size([2, 3])
"""

from __future__ import annotations

from .cnn import CNNEncoder
from .embedding import Embedder, Embeddings
from .mlp import MLPEncoder
from .module import Module
from .mos import MixtureOfSoftmax
from .pooling import (
    AvgPooling,
    FirstPooling,
    GeneralizedPooling,
    LastPooling,
    StructuredSelfAttentivePooling,
    SumPooling,
)
from .rnn import PooledRNNEncoder, RNNEncoder
from .sequential import Sequential
from .softmax import SoftmaxLayer
from .transformer import Transformer, TransformerDecoder, TransformerEncoder
from .transformer_sru import TransformerSRU, TransformerSRUDecoder, TransformerSRUEncoder

__all__ = [
    "AvgPooling",
    "CNNEncoder",
    "Embedder",
    "Embeddings",
    "FirstPooling",
    "GeneralizedPooling",
    "LastPooling",
    "MLPEncoder",
    "MixtureOfSoftmax",
    "Module",
    "PooledRNNEncoder",
    "RNNEncoder",
    "Sequential",
    "SoftmaxLayer",
    "StructuredSelfAttentivePooling",
    "SumPooling",
    "Transformer",
    "TransformerDecoder",
    "TransformerEncoder",
    "TransformerSRU",
    "TransformerSRUDecoder",
    "TransformerSRUEncoder",
]

"""flambe.nlp.transformers: pretrained-transformer classes, deliberately not ported.

Every release wrapped a third-party library (0.4.3-0.4.6 `pytorch_transformers`, 0.4.11
on `transformers`) whose models come from downloaded pretrained weights. The classes are
registered under their flambe names so a checkpoint that holds one fails with a
`LoadError` naming the dependency instead of an unknown tag.

>>> from flambe_compat import LoadError
>>> try:
...     PretrainedTransformerEmbedder("bert-base-uncased")
... except LoadError as error:
...     print(str(error).split(":")[0])
PretrainedTransformerEmbedder is not ported to flambe_compat
"""

from __future__ import annotations

from typing import Any, NoReturn

from ....component import Component, registrable_factory
from ..._optional import not_ported
from ...field.field import Field
from ...nn.module import Module

_WHY = "its weights are pretrained models downloaded by that library"


def _refuse(cls: type, dependency: str) -> NoReturn:
    raise not_ported(cls.__name__, dependency, _WHY)


class _NewTransformers(Component, should_register=False):
    """0.4.11 and later: `transformers`' Auto classes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse(type(self), "transformers")


class _PytorchTransformers(Component, should_register=False):
    """0.4.3 to 0.4.6: `pytorch_transformers` wrappers (0.4.3's built by `from_alias`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse(type(self), "pytorch_transformers")

    @registrable_factory
    @classmethod
    def from_alias(cls, *args: Any, **kwargs: Any) -> NoReturn:
        """0.4.3's constructor from a pretrained model alias."""
        _refuse(cls, "pytorch_transformers")


class PretrainedTransformerField(_NewTransformers, Field):
    """0.4.11+: a field tokenizing with a pretrained tokenizer."""


class PretrainedTransformerEmbedder(_NewTransformers, Module):  # type: ignore[misc]
    """0.4.11+: a pretrained transformer model."""


class BERTTextField(_PytorchTransformers, Field):
    """0.4.3."""


class BERTEmbeddings(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.3."""


class BERTEncoder(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.3."""


class OpenAIGPTTextField(_PytorchTransformers, Field):
    """0.4.3."""


class OpenAIGPTEmbeddings(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.3."""


class OpenAIGPTEncoder(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.3."""


class BertTextField(_PytorchTransformers, Field):
    """0.4.6."""


class BertEmbedder(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.6."""


class RobertaTextField(_PytorchTransformers, Field):
    """0.4.6."""


class RobertaEmbedder(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.6."""


class GPTTextField(_PytorchTransformers, Field):
    """0.4.6."""


class GPTEmbedder(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.6."""


class GPT2TextField(_PytorchTransformers, Field):
    """0.4.6."""


class GPT2Embedder(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.6."""


class XLMTextField(_PytorchTransformers, Field):
    """0.4.6."""


class XLMEmbedder(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.6."""


class XLNetTextField(_PytorchTransformers, Field):
    """0.4.6."""


class XLNetEmbedder(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.6."""


class TransfoXLTextField(_PytorchTransformers, Field):
    """0.4.6."""


class TransfoXLEmbedder(_PytorchTransformers, Module):  # type: ignore[misc]
    """0.4.6."""


class AdamW(_PytorchTransformers):
    """0.4.3-0.4.6: `pytorch_transformers`' AdamW optimizer."""


class ConstantLRSchedule(_PytorchTransformers):
    """0.4.3-0.4.6: a `pytorch_transformers` LR schedule."""


class WarmupConstantSchedule(_PytorchTransformers):
    """0.4.3-0.4.6: a `pytorch_transformers` LR schedule."""


class WarmupLinearSchedule(_PytorchTransformers):
    """0.4.3-0.4.6: a `pytorch_transformers` LR schedule."""


__all__ = [
    "AdamW",
    "BERTEmbeddings",
    "BERTEncoder",
    "BERTTextField",
    "BertEmbedder",
    "BertTextField",
    "ConstantLRSchedule",
    "GPT2Embedder",
    "GPT2TextField",
    "GPTEmbedder",
    "GPTTextField",
    "OpenAIGPTEmbeddings",
    "OpenAIGPTEncoder",
    "OpenAIGPTTextField",
    "PretrainedTransformerEmbedder",
    "PretrainedTransformerField",
    "RobertaEmbedder",
    "RobertaTextField",
    "TransfoXLEmbedder",
    "TransfoXLTextField",
    "WarmupConstantSchedule",
    "WarmupLinearSchedule",
    "XLMEmbedder",
    "XLMTextField",
    "XLNetEmbedder",
    "XLNetTextField",
]

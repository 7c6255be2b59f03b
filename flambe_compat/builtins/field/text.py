"""flambe's `TextField`: tokenize, add start/end tokens, numericalize through a vocabulary.

Takes the constructor arguments of every release (0.4.3's `embeddings*`, 0.4.11-0.4.13's
`model`/`setup_all_embeddings`, later `embeddings_info`, `additional_special_tokens`,
`vocabulary`). The vocabulary is the field's state (`register_attrs('vocab')`).
Building a vocabulary from data is ported; building it from pretrained embeddings (gensim)
is not. flambe never saved the set of tokens without embeddings, so `drop_unknown` never
applied to a loaded field, and it does not here either.

>>> field = TextField()
>>> field.setup(["the cat", "the dog"])
>>> list(field.vocab.items())
[('<pad>', 0), ('<unk>', 1), ('the', 2), ('cat', 3), ('dog', 4)]
>>> field.process("the bird").tolist()
[2, 1]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import torch

from ...component import registrable_factory
from .._optional import not_ported
from ..tokenizer import Tokenizer, WordTokenizer
from .field import Field


class EmbeddingsInformation(NamedTuple):
    """Where a field's pretrained embeddings come from, and how to use them."""

    embeddings: str
    embeddings_format: str = "gensim"
    embeddings_binary: bool = False
    build_vocab_from_embeddings: bool = False
    unk_init_all: bool = False
    drop_unknown: bool = False


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as lines:
        return lines.read().splitlines()


class TextField(Field):
    """Featurize text: lowercase (optionally), tokenize, numericalize, truncate."""

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        lower: bool = False,
        pad_token: str | None = "<pad>",
        unk_token: str | None = "<unk>",
        sos_token: str | None = None,
        eos_token: str | None = None,
        embeddings_info: EmbeddingsInformation | Mapping[str, Any] | None = None,
        embeddings: str | None = None,
        embeddings_format: str = "glove",
        embeddings_binary: bool = False,
        unk_init_all: bool = False,
        drop_unknown: bool = False,
        max_seq_len: int | None = None,
        truncate_end: bool = False,
        setup_all_embeddings: bool = False,
        additional_special_tokens: list[str] | None = None,
        vocabulary: Iterable[str] | str | None = None,
        model: Any = None,
    ) -> None:
        if isinstance(embeddings_info, Mapping):
            embeddings_info = EmbeddingsInformation(**embeddings_info)
        if embeddings:
            if embeddings_info:
                raise ValueError(
                    "Cannot submit embeddings information and use the embeddings parameters "
                    "simultaneously. Use the 'from_embeddings' factory instead."
                )
            embeddings_info = EmbeddingsInformation(
                embeddings=embeddings,
                embeddings_format=embeddings_format,
                embeddings_binary=embeddings_binary,
                build_vocab_from_embeddings=setup_all_embeddings,
                unk_init_all=unk_init_all,
                drop_unknown=drop_unknown,
            )
        self.tokenizer = tokenizer or WordTokenizer()
        self.lower = lower
        self.pad = pad_token
        self.unk = unk_token
        self.sos = sos_token
        self.eos = eos_token
        self.embeddings_info = embeddings_info
        self.model = model
        self.embedding_matrix: torch.Tensor | None = None
        self.max_seq_len = max_seq_len
        self.truncate_end = truncate_end
        self.unk_numericals: set[int] = set()
        tokens = _read_lines(vocabulary) if isinstance(vocabulary, str) else vocabulary or ()
        self.vocab: dict[str, int] = OrderedDict((tok, i) for i, tok in enumerate(tokens))
        specials = [pad_token, unk_token, sos_token, eos_token, *(additional_special_tokens or [])]
        self.specials = [special for special in specials if special is not None]
        self.register_attrs("vocab")

    @registrable_factory
    @classmethod
    def from_embeddings(
        cls,
        embeddings: str,
        embeddings_format: str = "glove",
        embeddings_binary: bool = False,
        build_vocab_from_embeddings: bool = False,
        unk_init_all: bool = False,
        drop_unknown: bool = False,
        additional_special_tokens: list[str] | None = None,
        setup_all_embeddings: bool = False,
        **kwargs: Any,
    ) -> TextField:
        """A field whose `setup` takes its vocabulary from pretrained embeddings.

        `setup_all_embeddings` is 0.4.11-0.4.13's name of `build_vocab_from_embeddings`.
        """
        info = EmbeddingsInformation(
            embeddings=embeddings,
            embeddings_format=embeddings_format,
            embeddings_binary=embeddings_binary,
            build_vocab_from_embeddings=build_vocab_from_embeddings or setup_all_embeddings,
            unk_init_all=unk_init_all,
            drop_unknown=drop_unknown,
        )
        return cls(
            embeddings_info=info, additional_special_tokens=additional_special_tokens, **kwargs
        )

    @property
    def vocab_list(self) -> list[str]:
        """The vocabulary's tokens, in order."""
        return list(self.vocab)

    @property
    def vocab_size(self) -> int:
        """The number of distinct indices in the vocabulary."""
        return len(set(self.vocab.values()))

    def _flatten_to_str(self, data_sample: Any) -> str:
        if isinstance(data_sample, list | tuple):
            return " ".join(self._flatten_to_str(s) for s in data_sample)
        if isinstance(data_sample, dict):
            return " ".join(self._flatten_to_str(s) for s in data_sample.values())
        if isinstance(data_sample, str):
            return data_sample
        raise ValueError(f"Cannot process type {type(data_sample)} for vocab building.")

    def _build_vocab(self, *data: Any) -> None:
        index = len(self.vocab) - 1
        for token in self.specials:
            if token not in self.vocab:
                self.vocab[token] = index = index + 1
        for dataset in data:
            if dataset is None:
                continue
            for sample in dataset:
                example = self._flatten_to_str(sample)
                example = example.lower() if self.lower else example
                for token in self.tokenizer(example):
                    if token not in self.vocab:
                        self.vocab[token] = index = index + 1

    def setup(self, *data: Any) -> None:
        """Add the special tokens, then every new token of the data, to the vocabulary."""
        if self.embeddings_info is not None or self.model is not None:
            raise not_ported("TextField.setup with pretrained embeddings", "gensim", "setup only")
        self._build_vocab(*data)

    def process(self, example: Any) -> Any:
        """A `long` tensor of indices; lists, tuples and dicts are processed item by item."""
        if isinstance(example, list | tuple):
            return [self.process(e) for e in example]
        if isinstance(example, dict):
            return {key: self.process(value) for key, value in example.items()}
        example = example.lower() if self.lower else example
        tokens = list(self.tokenizer(example))
        if self.sos is not None:
            tokens = [self.sos, *tokens]
        if self.eos is not None:
            tokens = [*tokens, self.eos]
        numericals = []
        for token in tokens:
            if token not in self.vocab:
                if self.unk is None or self.unk not in self.vocab:
                    raise ValueError(
                        "Encounterd out-of-vocabulary token but the unk_token is either "
                        "missing or not defined in the vocabulary."
                    )
                token = self.unk
            numericals.append(self.vocab[token])
        ret = torch.tensor(numericals).long()
        if self.max_seq_len is not None:
            ret = ret[-self.max_seq_len :] if self.truncate_end else ret[: self.max_seq_len]
        return ret

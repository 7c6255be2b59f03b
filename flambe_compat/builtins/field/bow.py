"""flambe's `BoWField`: bag-of-words counts over the tokens seen at least `min_freq` times.

The default tokenizer is `NGramsTokenizer`, which needs the optional `nltk`; pass another
tokenizer (as a config does when it names one) to use the field without it.

>>> from flambe_compat.builtins.tokenizer import WordTokenizer
>>> field = BoWField(tokenizer=WordTokenizer(), min_freq=2)
>>> field.setup(["thank you", "thank you very much", "thanks a lot"])
>>> list(field.vocab)
['<unk>', 'thank', 'you']
>>> field.process("thank you thank never").tolist()
[1.0, 2.0, 1.0]
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from ..tokenizer import NGramsTokenizer, Tokenizer
from .field import Field


class BoWField(Field):
    """Count vectors over a frequency-filtered vocabulary (index 0 is the unknown token)."""

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        lower: bool = False,
        unk_token: str = "<unk>",
        min_freq: int = 5,
        normalize: bool = False,
        scale_factor: float | None = None,
    ) -> None:
        self.tokenizer = tokenizer or NGramsTokenizer()
        self.lower = lower
        self.unk = unk_token
        self.min_freq = min_freq
        self.normalize = normalize
        self.scale_factor = scale_factor
        self.vocab: dict[str, int] = OrderedDict()
        self.vocab[unk_token] = 0
        self.full_vocab: dict[str, int] = {}
        if scale_factor and not normalize:
            raise ValueError("Cannot specify scale_factor without normalizing")
        self.register_attrs("vocab", "full_vocab")

    @property
    def vocab_size(self) -> int:
        """The number of entries in the count vectors."""
        return len(self.vocab)

    def process(self, example: str) -> torch.Tensor:
        """A float vector of token counts (optionally L1-normalised and scaled).

        Tokens seen in `setup` but filtered out by `min_freq` are ignored; never-seen ones
        count towards the unknown token.
        """
        example = example.lower() if self.lower else example
        numericals = [0] * len(self.vocab)
        for token in self.tokenizer(example):
            if token in self.vocab:
                numericals[self.vocab[token]] += 1
            elif token not in self.full_vocab:
                if self.unk is None or self.unk not in self.vocab:
                    raise ValueError(
                        "Encounterd out-of-vocabulary token but the unk_token is either "
                        "missing or not defined in the vocabulary."
                    )
                numericals[self.vocab[self.unk]] += 1
        processed = torch.tensor(numericals).float()
        if self.normalize:
            processed = torch.nn.functional.normalize(processed, dim=0, p=1)
        if self.scale_factor:
            processed = self.scale_factor * processed
        return processed

    def setup(self, *data: Any) -> None:
        """Count every token, then add those seen at least `min_freq` times."""
        for dataset in data:
            for example in dataset:
                example = example.lower() if self.lower else example
                for token in self.tokenizer(example):
                    self.full_vocab[token] = self.full_vocab.get(token, 0) + 1
        for token, count in self.full_vocab.items():
            if count >= self.min_freq:
                self.vocab.setdefault(token, len(self.vocab))

"""flambe's `LabelField`: labels (optionally several per example) to indices or one-hot.

The vocabulary and the label counts are the field's state. 0.4.3 returned the indices
unsqueezed (`[1]` for one label); later releases, and this one, squeeze them.

>>> field = LabelField(multilabel_sep=",")
>>> field.setup(["a", "b,a"])
>>> field.process("b").tolist(), field.label_count_dict
(1, {'a': 2, 'b': 1})
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch

from ..tokenizer import LabelTokenizer
from .field import Field


class LabelField(Field):
    """Featurize labels, from a given label list or as they are met in `setup`."""

    def __init__(
        self,
        one_hot: bool = False,
        multilabel_sep: str | None = None,
        labels: Iterable[str] | str | None = None,
    ) -> None:
        self.one_hot = one_hot
        self.multilabel_sep = multilabel_sep
        self.tokenizer = LabelTokenizer(multilabel_sep=self.multilabel_sep)
        self.label_given = labels is not None
        if isinstance(labels, str):
            with open(labels, encoding="utf-8") as lines:
                labels = lines.read().splitlines()
        self.vocab: dict[str, int] = OrderedDict((label, i) for i, label in enumerate(labels or ()))
        self.label_count_dict: dict[str, int] = {label: 0 for label in self.vocab}
        self.register_attrs("vocab")
        self.register_attrs("label_count_dict")

    def setup(self, *data: Any) -> None:
        """Count the labels; add new ones unless a label list was given (then refuse them)."""
        for dataset in data:
            if dataset is None:
                continue
            for example in dataset:
                for token in self.tokenizer(example):
                    if token in self.vocab:
                        self.label_count_dict[token] += 1
                    elif self.label_given:
                        raise ValueError(f"Found label {token} not provided in label list.")
                    else:
                        self.vocab[token] = len(self.vocab)
                        self.label_count_dict[token] = 1

    def process(self, example: str) -> torch.Tensor:
        """The label indices (squeezed), or a one-hot vector over the vocabulary."""
        numericals = []
        for token in self.tokenizer(example):
            if token not in self.vocab:
                raise ValueError(f"Encounterd out-of-vocabulary label {token}")
            numericals.append(self.vocab[token])
        out = torch.tensor(numericals).long()
        if self.one_hot:
            out = torch.tensor([int(i in out) for i in range(len(self.vocab))]).long()
        return out.squeeze()

    @property
    def vocab_list(self) -> list[str]:
        """The labels, in index order."""
        return list(self.vocab)

    @property
    def vocab_size(self) -> int:
        """The number of labels."""
        return len(self.vocab)

    @property
    def label_count(self) -> torch.Tensor:
        """How often each label was seen, by index."""
        return torch.tensor([self.label_count_dict[label] for label in self.vocab]).float()

    @property
    def label_freq(self) -> torch.Tensor:
        """The relative frequency of each label, by index."""
        counts = self.label_count
        return counts / counts.sum()

    @property
    def label_inv_freq(self) -> torch.Tensor:
        """The inverse relative frequency of each label, by index."""
        return 1.0 / self.label_freq

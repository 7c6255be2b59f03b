"""flambe's `PrototypicalTextClassifier`: negative distances to per-class prototypes.

>>> import torch
>>> from flambe_compat.builtins.nn import Embedder, Embeddings, MLPEncoder, AvgPooling
>>> embedder = Embedder(Embeddings(10, 4), MLPEncoder(4, 4), pooling=AvgPooling(), padding_idx=None)
>>> model = PrototypicalTextClassifier(embedder)
>>> support, labels = torch.tensor([[1, 2], [3, 4], [5, 6]]), torch.tensor([0, 1, 1])
>>> model(torch.tensor([[1, 2]]), support=support, support_label=labels).shape
torch.Size([1, 2])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ...nn.distance import get_distance_module, get_mean_module
from ...nn.module import Module


class PrototypicalTextClassifier(Module):
    """Classify queries by their distance to the mean encoding of each class's support."""

    def __init__(
        self, embedder: nn.Module, distance: str = "euclidean", detach_mean: bool = False
    ) -> None:
        super().__init__()
        self.embedder = embedder
        self.distance_module = get_distance_module(distance)
        self.mean_module = get_mean_module(distance)
        self.detach_mean = detach_mean

    def compute_prototypes(self, support: Tensor, label: Tensor) -> Tensor:
        """One prototype per label `0..n-1`: the mean of that label's support encodings."""
        by_label: dict[int, list[Tensor]] = {}
        for i in range(support.size(0)):
            by_label.setdefault(int(label[i]), []).append(support[i])
        means = []
        for i in range(len(by_label)):
            supports = torch.stack(by_label[i], dim=0)
            if supports.size(0) > 1:
                means.append(self.mean_module(supports).squeeze(0))
            else:
                means.append(supports.squeeze(0))
        return torch.stack(means, dim=0)

    def _encode(self, data: Tensor) -> Tensor:
        encoding = self.embedder(data)
        return encoding[0] if isinstance(encoding, tuple) else encoding  # type: ignore[no-any-return]

    def forward(
        self,
        query: Tensor,
        query_label: Tensor | None = None,
        support: Tensor | None = None,
        support_label: Tensor | None = None,
        prototypes: Tensor | None = None,
    ) -> Any:
        """`-distance` of each query to each prototype (and `query_label` when given)."""
        query_encoding = self._encode(query)
        if prototypes is None:
            if support is None or support_label is None:
                raise ValueError("No prototypes set or provided")
            if self.detach_mean:
                support = support.detach()
                support_label = support_label.detach()
            prototypes = self.compute_prototypes(self._encode(support), support_label)
        dist = self.distance_module(query_encoding, prototypes)
        return (-dist, query_label) if query_label is not None else -dist

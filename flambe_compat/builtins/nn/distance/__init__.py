"""flambe's distance and mean modules, and the aliases prototypical networks name them by.

>>> type(get_distance_module("cosine")).__name__
'CosineDistance'
"""

from __future__ import annotations

from .cosine import CosineDistance, CosineMean
from .distance import DistanceModule, MeanModule
from .euclidean import EuclideanDistance, EuclideanMean
from .hyperbolic import HyperbolicDistance, HyperbolicMean

_DISTANCES: dict[str, type[DistanceModule]] = {
    "euclidean": EuclideanDistance,
    "cosine": CosineDistance,
    "hyperbolic": HyperbolicDistance,
}
_MEANS: dict[str, type[MeanModule]] = {
    "euclidean": EuclideanMean,
    "cosine": CosineMean,
    "hyperbolic": HyperbolicMean,
}


def get_distance_module(metric: str) -> DistanceModule:
    """The distance module for `euclidean`, `cosine` or `hyperbolic`."""
    if metric not in _DISTANCES:
        raise ValueError(f"Unknown distance alias: {metric}")
    return _DISTANCES[metric]()


def get_mean_module(metric: str) -> MeanModule:
    """The mean module for `euclidean`, `cosine` or `hyperbolic`."""
    if metric not in _MEANS:
        raise ValueError(f"Unknown distance alias: {metric}")
    return _MEANS[metric]()


__all__ = [
    "CosineDistance",
    "CosineMean",
    "DistanceModule",
    "EuclideanDistance",
    "EuclideanMean",
    "HyperbolicDistance",
    "HyperbolicMean",
    "MeanModule",
    "get_distance_module",
    "get_mean_module",
]

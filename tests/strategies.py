"""Hypothesis strategies for random `State`s shaped like the ones flambe's Components produce.

A state is a tree of Components (prefix `''` always; children reached as attributes, or
through plain modules so that their folder name is dotted), keys under each Component
that never fall into another one, values of every kind flambe states hold (tensors of
many dtypes and layouts, views sharing storage, numpy arrays, plain Python data), and
`_metadata` with `_flambe_directories`, `keep_vars`, node metadata and torch's
per-module metadata.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import torch
import yaml
from hypothesis import strategies as st

from flambe_compat import State
from flambe_compat.layout import (
    FLAMBE_DIRECTORIES_KEY,
    FLAMBE_STASH_KEY,
    KEEP_VARS_KEY,
    STATE_DICT_DELIMETER,
)
from flambe_compat.tree import node_metadata

COMPONENT_NAMES = ("model", "encoder", "counter", "head", "émbedder", "a", "b", "c")
PLAIN_PATHS = ("plain", "torch_only", "layers.0", "blocks.1.inner")
"""Paths through plain `nn.Module`s, which are not Components, to a child Component."""
KNOWN_TREES = (
    frozenset({"", "a", "a.plain.b", "a.plain.b.plain.c"}),
    frozenset({"", "model", "model.layers.0.block"}),
    frozenset({"", "torch_only.child", "model"}),
)
"""Trees flambe's own writer got wrong or that need dotted folder names."""
KEY_SEGMENTS = ("weight", "bias", "layer", "layers", "0", "1", "encoder", "steps", "ñame", "a")

TENSOR_DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.bool,
    torch.complex64,
)
NUMPY_DTYPES = tuple(
    np.dtype(name)
    for name in ("float64", "float32", "int64", "int8", "uint16", "bool", "complex128", "<U3")
)
CLASS_NAMES = ("MLP", "Counter", "Wrapper", "Stack", "Ünicode")
TAGS = ("!sample_models.MLP", "!Counter", "!torch.Linear")
"""YAML tags are ASCII (URI characters), so a config never tags a non-ASCII class name."""
VERSIONS = ("0.0.0", "2.0.1", "1.0", "0.4.18")

unicode_text = st.text(st.characters(codec="utf-8"), max_size=12)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
matrix_shapes = hnp.array_shapes(min_dims=2, max_dims=3, min_side=2, max_side=4)
"""Shapes whose views (`views_of`) are mostly not contiguous."""


def join(*parts: str) -> str:
    """Dotted join that skips empty parts: `join('', 'model', 'weight') == 'model.weight'`."""
    return STATE_DICT_DELIMETER.join(part for part in parts if part)


def owner(key: str, prefixes: Iterable[str]) -> str:
    """The Component prefix whose node holds `key`: the longest one the key lies under."""
    under = [p for p in prefixes if p == "" or key.startswith(p + STATE_DICT_DELIMETER)]
    return max(under, key=len)


@st.composite
def component_trees(draw: st.DrawFn) -> frozenset[str]:
    """`_flambe_directories`: Component prefixes, each a child of an earlier one."""
    prefixes = {""}
    for _ in range(draw(st.integers(0, 4))):
        parent = draw(st.sampled_from(sorted(prefixes)))
        via = draw(st.sampled_from(("", "", *PLAIN_PATHS)))
        prefixes.add(join(parent, via, draw(st.sampled_from(COMPONENT_NAMES))))
    return frozenset(prefixes)


def names_owned_by(prefix: str, tree: frozenset[str]) -> st.SearchStrategy[str]:
    """Dotted names relative to `prefix` that land in its node, never in a child Component."""
    names = st.lists(st.sampled_from(KEY_SEGMENTS), min_size=1, max_size=4).map(".".join)
    return names.filter(
        lambda name: join(prefix, name) not in tree and owner(join(prefix, name), tree) == prefix
    )


def _elements(dtype: torch.dtype) -> st.SearchStrategy[Any]:
    if dtype == torch.bool:
        return st.booleans()
    if dtype.is_complex:
        return st.complex_numbers(max_magnitude=1e3, allow_nan=False, allow_infinity=False)
    if dtype.is_floating_point:
        return st.floats(-1e3, 1e3)
    info = torch.iinfo(dtype)
    return st.integers(info.min, info.max)


@st.composite
def tensors(draw: st.DrawFn, parameters: bool = False) -> torch.Tensor:
    """A tensor of any dtype and shape (0-dim and empty included), NaN-free.

    It may be a strided view of a larger storage (`views_of`). With `parameters`,
    floating tensors may be `nn.Parameter`s (a `keep_vars=True` state).
    """
    dtype = draw(st.sampled_from(TENSOR_DTYPES))
    strided = draw(st.booleans())
    shape = draw(matrix_shapes if strided else shapes)
    count = math.prod(shape)
    values = draw(st.lists(_elements(dtype), min_size=count, max_size=count))
    tensor = torch.tensor(values, dtype=dtype).reshape(shape)
    if strided:
        tensor = draw(views_of(tensor))
    if parameters and dtype.is_floating_point and draw(st.booleans()):
        return torch.nn.Parameter(tensor, requires_grad=draw(st.booleans()))
    return tensor


def views_of(base: torch.Tensor) -> st.SearchStrategy[torch.Tensor]:
    """Tensors sharing `base`'s storage: aliases, transposes and strided slices.

    Not views as another dtype: `torch.save` refuses those (see test_roundtrip).
    """
    options = [base.detach()]
    if base.dim() >= 2:
        options += [base.transpose(0, 1), base[:, ::2]]
    if base.dim() >= 1:
        options += [base[1:], base[::2]]
    if base.dim() >= 1 and len(base):
        options.append(base[0])
    return st.sampled_from(options)


numpy_arrays = hnp.arrays(
    st.sampled_from(NUMPY_DTYPES), shapes, elements={"allow_nan": False, "allow_infinity": False}
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    unicode_text,
    st.binary(max_size=8),
)
plain_values = st.recursive(
    st.one_of(scalars, numpy_arrays, tensors()),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.one_of(unicode_text, st.integers()), children, max_size=3),
    ),
    max_leaves=6,
)
"""Values a Component registers (`register_attrs`) or stashes: anything pickle keeps."""


@st.composite
def node_values(draw: st.DrawFn, count: int, keep_vars: bool) -> list[Any]:
    """`count` values of one node; later tensors may be views of earlier ones."""
    independent = st.one_of(tensors(parameters=keep_vars), numpy_arrays, plain_values)
    values: list[Any] = []
    for _ in range(count):
        bases = [v for v in values if type(v) is torch.Tensor and v.numel() > 0]
        if bool(bases) and draw(st.booleans()):
            values.append(draw(views_of(draw(st.sampled_from(bases)))))
        else:
            values.append(draw(independent))
    return values


@st.composite
def configs(draw: st.DrawFn) -> str:
    """A config.yaml text flambe could read: empty, or a tagged object after optional extensions."""
    if draw(st.booleans()):
        return draw(st.sampled_from(("", "!sample_models.MLP\nsizes: [4, 8]\n")))
    body = draw(st.dictionaries(unicode_text, st.one_of(st.integers(), unicode_text), max_size=3))
    text = f"{draw(st.sampled_from(TAGS))}\n"
    text += yaml.safe_dump(body, allow_unicode=True)
    if draw(st.booleans()):
        text = "sample_models: ./sample_models\n---\n" + text
    return text


@st.composite
def node_entries(draw: st.DrawFn) -> dict[str, Any]:
    """One Component's `_metadata` entry, with torch's `version` if it is also a Module."""
    entry: dict[str, Any] = {"version": 1} if draw(st.booleans()) else {}
    entry.update(
        node_metadata(
            draw(st.sampled_from(CLASS_NAMES)),
            draw(st.sampled_from(VERSIONS)),
            draw(st.text(st.characters(codec="utf-8"), max_size=40)),
            draw(configs()),
        )
    )
    if draw(st.booleans()):
        entry[FLAMBE_STASH_KEY] = draw(st.dictionaries(unicode_text, plain_values, max_size=3))
    return entry


@st.composite
def states(draw: st.DrawFn) -> State:
    """A whole `State`: Component tree, keys in a random order, and full `_metadata`."""
    tree = draw(st.one_of(st.sampled_from(KNOWN_TREES), component_trees()))
    keep_vars = draw(st.booleans())
    items: list[tuple[str, Any]] = []
    metadata: dict[str, Any] = {FLAMBE_DIRECTORIES_KEY: set(tree), KEEP_VARS_KEY: keep_vars}
    for prefix in sorted(tree):
        owned = names_owned_by(prefix, tree)
        names = draw(st.lists(owned, max_size=4, unique=True))
        values = draw(node_values(len(names), keep_vars))
        items += [(join(prefix, name), value) for name, value in zip(names, values, strict=True)]
        metadata[prefix] = draw(node_entries())
        for module in draw(st.lists(owned, max_size=2, unique=True)):
            metadata[join(prefix, module)] = {"version": draw(st.integers(1, 3))}
    state = State(draw(st.permutations(items)))
    state._metadata = metadata
    return state

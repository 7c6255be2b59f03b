"""flambe's YAML configs, read as data: tags such as `!sample_models.MLP` are kept, not run.

A config is at most two YAML documents: an optional extensions mapping, then the object.

>>> check_config("!sample_models.MLP\\nsizes: [4, 8]\\n")
>>> check_config("a: [1")
Traceback (most recent call last):
...
ValueError: not valid YAML: ...
"""

from __future__ import annotations

from typing import Any

import yaml

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when built


class _TagKeepingLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """A safe loader that accepts every `!tag`, building plain data from the node."""


def _construct_tagged(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_TagKeepingLoader.add_multi_constructor("!", _construct_tagged)
_TagKeepingLoader.add_multi_constructor("tag:", _construct_tagged)

MAX_DOCUMENTS = 2


def config_documents(text: str) -> list[Any]:
    """The YAML documents of a config; raises `ValueError` when it is not valid YAML."""
    try:
        documents = list(yaml.load_all(text, Loader=_TagKeepingLoader))
    except (yaml.YAMLError, RecursionError) as error:
        raise ValueError(f"not valid YAML: {' '.join(str(error).split())}") from None
    return documents


def check_config(text: str) -> None:
    """Raise `ValueError` unless `text` is an empty config or one flambe could read."""
    documents = config_documents(text)
    if len(documents) > MAX_DOCUMENTS:
        raise ValueError(
            f"has {len(documents)} YAML documents; flambe allows an extensions section and "
            "the object"
        )

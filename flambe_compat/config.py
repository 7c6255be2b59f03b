"""flambe's YAML configs, checked as YAML without building anything from them.

A config is at most two YAML documents: an optional extensions mapping, then the object,
whose tags (`!sample_models.MLP`) name classes. Validation only needs to know that the
text is YAML and how many documents it holds, so it reads the parser's events: no tag
is resolved and no object is built.

>>> config_documents("!sample_models.MLP\\nsizes: [4, 8]\\n")
1
>>> config_documents("a: [1")
Traceback (most recent call last):
...
ValueError: not valid YAML: ...
"""

from __future__ import annotations

import functools

import yaml

MAX_CONFIG_CHARACTERS = 1 << 20
"""Larger configs are refused: flambe's are a few lines per Component."""
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when built


def config_documents(text: str) -> int:
    """How many YAML documents `text` holds; `ValueError` when it is not YAML or too large."""
    if len(text) > MAX_CONFIG_CHARACTERS:
        raise ValueError(f"larger than {MAX_CONFIG_CHARACTERS} characters, not read")
    if len(text) <= _SHARED_CONFIG_CHARACTERS:
        return _small_config_documents(text)
    return _documents(text)


_SHARED_CONFIG_CHARACTERS = 1024
"""Configs this short are parsed once per text: a model's layers often share theirs."""


@functools.lru_cache(maxsize=256)
def _small_config_documents(text: str) -> int:
    return _documents(text)


def _documents(text: str) -> int:
    try:
        events = yaml.parse(text, Loader=_Loader)
        return sum(isinstance(event, yaml.DocumentStartEvent) for event in events)
    except (yaml.YAMLError, RecursionError) as error:
        raise ValueError(f"not valid YAML: {' '.join(str(error).split())}") from None

"""The shim: code written for flambe imports unchanged, and only when asked."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import flambe_compat
from flambe_compat import shim


@pytest.fixture
def installed() -> Iterator[None]:
    assert not shim.installed()
    shim.install()
    try:
        yield
    finally:
        shim.uninstall()


def test_flambe_names_are_ours(installed: None) -> None:
    import flambe
    from flambe.compile import Component, load, registrable_factory, save
    from flambe.compile.serialization import load_state_from_file

    assert Component is flambe_compat.Component and flambe.Component is Component
    assert registrable_factory is flambe_compat.registrable_factory
    assert (load, save) == (flambe_compat.load, flambe_compat.save)
    assert load_state_from_file is flambe_compat.load_state_from_file
    assert importlib.import_module("flambe.compile.serialization") is flambe_compat.serialization


def test_builtin_modules_map_to_ours(installed: None) -> None:
    import flambe.nn
    from flambe.field import TextField
    from flambe.nlp.classification import TextClassifier

    from flambe_compat import builtins

    assert flambe.nn is builtins.nn
    assert TextClassifier is builtins.nlp.classification.TextClassifier
    assert TextField is builtins.field.TextField
    assert importlib.import_module("flambe.nn.embedder") is builtins.nn.embedding
    transformers = importlib.import_module("flambe.nlp.transformers.bert")
    assert transformers is builtins.nlp.transformers


def test_missing_modules_stay_missing(installed: None) -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("flambe.experiment")


def test_uninstall_removes_every_flambe_module(installed: None) -> None:
    import flambe.compile  # noqa: F401

    shim.uninstall()
    assert not any(name == "flambe" or name.startswith("flambe.") for name in sys.modules)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("flambe")
    shim.install()  # for the fixture's uninstall


def test_user_modules_written_for_flambe_register(installed: None, tmp_path: Path) -> None:
    (tmp_path / "shim_user_module.py").write_text(
        textwrap.dedent(
            """\
            import torch
            from flambe.compile import Component
            from flambe.nn import Module

            class Tiny(Component, torch.nn.Module):
                def __init__(self, size=2):
                    super().__init__()
                    self.linear = torch.nn.Linear(size, size)

            class Other(Module):
                pass
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("shim_user_module")
        assert flambe_compat.registry.registry.resolve("!shim_user_module.Tiny").cls is module.Tiny
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shim_user_module", None)


def test_it_refuses_to_shadow_the_real_flambe(tmp_path: Path) -> None:
    (tmp_path / "flambe").mkdir()
    (tmp_path / "flambe" / "__init__.py").write_text("REAL = True\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(shim.ShimError, match="real flambe is importable"):
            shim.install()
        assert not shim.installed()
    finally:
        sys.path.remove(str(tmp_path))


def test_importing_flambe_compat_does_not_install_it() -> None:
    code = (
        "import flambe_compat, flambe_compat.shim, importlib.util as u; "
        "print(u.find_spec('flambe'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "None"

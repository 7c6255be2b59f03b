"""`load()`: every corpus archive rebuilt through the shim, our own saves, versions, extensions."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import flambe_compat
from flambe_compat import LoadError, State, load, load_state_from_file, save, save_state_to_file
from flambe_compat.class_migrations import ClassMigrations
from flambe_compat.objects import from_config, rebuild
from flambe_compat.registry import Registry
from flambe_compat.tree import node_metadata
from tests.corpus import archives, describe
from tests.sample_graphs import legacy_module

CORPUS = list(archives())
sample_models = legacy_module("sample_models")
legacy_models = legacy_module("legacy_models")


def _pipeline() -> Any:
    return legacy_models.train(from_config(legacy_models.PIPELINE))


@pytest.mark.parametrize("archive", CORPUS, ids=[a.id for a in CORPUS])
def test_every_corpus_archive_rebuilds(archive: Any) -> None:
    """The object's class is the saved root's, and its state holds the saved values."""
    obj = load(archive.path)
    saved = archive.expected["saved"]
    assert type(obj).__name__ == saved["metadata"][""]["_flambe_class"]
    state = describe(obj.get_state())
    assert sorted(state["keys"]) == sorted(saved["keys"])
    assert state["values"] == saved["values"]
    assert state["metadata"]["_flambe_directories"] == saved["metadata"]["_flambe_directories"]
    for prefix in saved["metadata"]["_flambe_directories"]:
        ours, theirs = state["metadata"][prefix], saved["metadata"][prefix]
        assert ours["_flambe_class"] == theirs["_flambe_class"]
        assert ours["_flambe_version"] == theirs["_flambe_version"]
        if archive.release_tuple >= (0, 4, 6):  # 0.4.3 wrote bare tags; we write namespaced
            assert ours["_flambe_config"] == theirs["_flambe_config"], "flambe's, byte for byte"


def test_the_loaded_object_is_the_saved_one() -> None:
    """Attributes, registered attributes and the tensors the object computes with."""
    path = next(a.path for a in CORPUS if a.id == "0.4.18-zip/wrapper-dir")
    wrapper = load(path)
    assert isinstance(wrapper, sample_models.Wrapper)
    assert isinstance(wrapper.model, sample_models.Stack)
    assert wrapper.note == "hello" and wrapper.counter.count == 1
    assert wrapper.model.steps == [1, 2, 3]
    state = load_state_from_file(path)
    assert torch.equal(wrapper.model.proj.weight, state["model.proj.weight"])
    x = torch.ones(1, 3)
    expected = torch.tanh(x @ state["model.inner.net.0.weight"].T + state["model.inner.net.0.bias"])
    assert torch.allclose(wrapper.model.inner.net(x), expected)


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("compress,pickle_only", [(False, False), (True, False), (False, True)])
def test_our_saves_load_back(
    tmp_path: Path, protocol: int, compress: bool, pickle_only: bool
) -> None:
    """Factories, links, torch classes, `_state` hooks and registered attributes survive."""
    pipeline = _pipeline()
    save(pipeline, tmp_path / "p", compress=compress, pickle_only=pickle_only, protocol=protocol)
    path = next(tmp_path.iterdir())
    loaded = load(path)
    assert isinstance(loaded, legacy_models.Pipeline)
    assert loaded.width == 3 and loaded.notes.seen == ["a", "b"] and loaded.notes.text == "hi"
    assert loaded.head.body.factor == 0.5
    x = legacy_models.example_input()
    assert torch.equal(loaded.forward(x), pipeline.forward(x))
    assert describe(loaded.get_state()) == describe(pipeline.get_state())


def test_the_config_we_write_rebuilds_with_links() -> None:
    config = _pipeline().get_state()._metadata[""]["_flambe_config"]
    assert "!@ head[body].linear.in_features" in config
    assert "!legacy_models.Scaler.square" in config
    assert "!torch.Tanh" in config


def _state_of(obj: Any) -> State:
    return obj.get_state()


def test_a_major_version_mismatch_needs_a_migration() -> None:
    state = _state_of(_pipeline())
    state._metadata["head.body"]["_flambe_version"] = "2.1.1"
    with pytest.raises(LoadError) as raised:
        rebuild(state)
    message = str(raised.value)
    assert "Scaler" in message and "2.1.1" in message and "1.2.3" in message
    assert "register_class_migration('Scaler', '2.x', '1.2.3')" in message


def test_versions_with_a_zero_part_are_not_compared() -> None:
    """flambe opted into semantic versions only when every part is at least 1."""
    state = _state_of(_pipeline())
    state._metadata["head.body"]["_flambe_version"] = "2.0.0"
    assert rebuild(state).head.body.factor == 0.5


def test_registered_migrations_run_before_the_version_check() -> None:
    state = _state_of(_pipeline())
    state._metadata["head.body"]["_flambe_version"] = "2.1.1"
    state["head.body.old_factor"] = state.pop("head.body.factor")
    migrations = ClassMigrations()
    with pytest.raises(LoadError, match="register_class_migration"):
        rebuild(state, class_migrations=migrations)

    @migrations.register("Scaler", "2.x", "1.2.3")
    def rename(node: dict[str, Any]) -> dict[str, Any]:
        node["factor"] = node.pop("old_factor")
        return node

    loaded = rebuild(state, class_migrations=migrations)
    assert loaded.head.body.factor == 0.5
    assert loaded.get_state()._metadata["head.body"]["_flambe_version"] == "1.2.3"


def test_a_minor_version_difference_loads() -> None:
    state = _state_of(_pipeline())
    state._metadata["head.body"]["_flambe_version"] = "1.1.1"
    assert rebuild(state).head.body.factor == 0.5


def _with_config(config: str) -> State:
    state = State()
    state._metadata = {"": {"_flambe_config": textwrap.dedent(config)}}
    return state


def test_extension_modules_are_imported_only_when_allowed(tmp_path: Path) -> None:
    package = tmp_path / "ext_pkg_for_objects"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from flambe_compat import Component\n"
        "class Thing(Component):\n"
        "    def __init__(self, size=1):\n"
        "        self.size = size\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        state = _with_config(
            """\
            ext_pkg_for_objects: ext-pkg-for-objects==1.0
            ---
            !ext_pkg_for_objects.Thing
            size: 4
            """
        )
        with pytest.raises(LoadError, match="extensions name ext_pkg_for_objects"):
            rebuild(state)
        assert "ext_pkg_for_objects" not in sys.modules
        assert rebuild(state, extensions=["ext_pkg_for_objects"]).size == 4
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ext_pkg_for_objects", None)


def test_a_missing_extension_is_not_installed_without_auto_install() -> None:
    state = _with_config(
        """\
        surely_not_installed_ext: surely-not-installed-ext
        ---
        !surely_not_installed_ext.Thing {}
        """
    )
    with pytest.raises(LoadError, match="not installed: pip install 'surely-not-installed-ext'"):
        rebuild(state, trusted=True)


def test_a_config_without_root_config_names_the_fix(tmp_path: Path) -> None:
    state = State({"x": 1})
    state._metadata = {"": node_metadata("X"), "_flambe_directories": {""}, "keep_vars": False}
    save_state_to_file(state, tmp_path / "s")
    with pytest.raises(LoadError, match=r"no config.*load_state_from_file") as raised:
        load(tmp_path / "s")
    assert str(tmp_path / "s") in str(raised.value)


def test_a_private_registry_resolves_only_its_classes() -> None:
    state = _state_of(_pipeline())
    with pytest.raises(LoadError, match=r"unknown tag !legacy_models\.Pipeline"):
        rebuild(state, registry=Registry())


def test_plain_modules_held_by_plain_components_are_loaded() -> None:
    """flambe saved them (0.4.12+) but never loaded them back."""

    class Holder(flambe_compat.Component, tag_namespace="objects_tests"):
        def __init__(self, size: int = 2) -> None:
            self.linear = torch.nn.Linear(size, size)

    holder = Holder.compile(size=2)
    with torch.no_grad():
        holder.linear.weight.fill_(3.0)
    loaded = rebuild(holder.get_state())
    assert torch.equal(loaded.linear.weight, holder.linear.weight)


def test_auto_install_runs_pip_for_missing_extensions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With auto_install, a missing extension is pip-installed (here a fake pip that
    writes the module), then imported, as flambe did."""
    import subprocess

    from flambe_compat import objects

    calls: list[list[str]] = []

    def fake_pip(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        (tmp_path / "auto_installed_ext.py").write_text(
            "from flambe_compat import Component\n"
            "class Thing(Component):\n"
            "    def __init__(self, size=1):\n"
            "        self.size = size\n"
        )
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(objects.subprocess, "run", fake_pip)
    monkeypatch.syspath_prepend(str(tmp_path))
    state = _with_config(
        """\
        auto_installed_ext: auto-installed-ext==2.0
        ---
        !auto_installed_ext.Thing
        size: 5
        """
    )
    try:
        assert rebuild(state, auto_install=True).size == 5
    finally:
        sys.modules.pop("auto_installed_ext", None)
    assert calls == [[sys.executable, "-m", "pip", "install", "-U", "auto-installed-ext==2.0"]]


@pytest.mark.parametrize("requirement", ["--index-url=http://evil", "-e ."])
def test_auto_install_refuses_pip_options(requirement: str) -> None:
    state = _with_config(f"absent_ext_opt: '{requirement}'\n---\n!absent_ext_opt.Thing {{}}\n")
    with pytest.raises(LoadError, match="is not a requirement"):
        rebuild(state, auto_install=True)


def test_component_save_and_load_from_path(tmp_path: Path) -> None:
    pipeline = _pipeline()
    pipeline.save(str(tmp_path / "p"))
    loaded = legacy_models.Pipeline.load_from_path(str(tmp_path / "p"))
    assert describe(loaded.get_state()) == describe(pipeline.get_state())

"""Class state migrations: a `Stack` that changed twice, 1.0.0 -> 1.1.0 -> 2.0.0.

Stack 1.1 added a `depth` key (1.0 stacks had one layer); Stack 2.0 renamed `proj.weight`
to `projection.weight`. Saved models hold Stacks of several versions at several prefixes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

import flambe_compat
from flambe_compat import (
    ClassMigrations,
    LoadError,
    State,
    load_state_from_file,
    save_state_to_file,
    upgrade,
)
from flambe_compat.class_migrations import class_migrations as default_registry
from flambe_compat.tree import node_metadata
from tests.corpus import describe

STACK_FOLDERS = {"encoder": "encoder", "encoder.plain.deep": "encoder/plain.deep"}


def add_depth(state: dict[str, Any]) -> dict[str, Any]:
    """Stack 1.1 records its number of layers; a 1.0 Stack had one."""
    state["depth"] = 1
    return state


def rename_projection(state: dict[str, Any]) -> dict[str, Any]:
    """Stack 2.0 spells its projection out."""
    return {
        ("projection.weight" if key == "proj.weight" else key): value
        for key, value in state.items()
    }


def stack_migrations(reverse: bool = False) -> ClassMigrations:
    """A fresh registry with both Stack steps (registered in either order)."""
    registry = ClassMigrations()
    steps = [("1.0.0", "1.1.0", add_depth), ("1.x", "2.0.0", rename_projection)]
    for source, target, function in reversed(steps) if reverse else steps:
        registry.register("Stack", source, target)(function)
    return registry


def model_state(decoder: bool = True) -> State:
    """Stacks at 1.0.0 (`encoder`), 1.1.0 (`encoder.plain.deep`, reached through a plain
    module, so saved in the dotted folder `encoder/plain.deep`) and 2.0.0 (`decoder`), and
    a Counter whose key is named like a Stack's."""
    state = State()
    state["step"] = 7
    state["encoder.proj.weight"] = torch.arange(4.0)
    state["encoder.plain.linear.weight"] = torch.ones(2, 2)
    state["encoder.plain.deep.proj.weight"] = torch.arange(3.0)
    state["encoder.plain.deep.depth"] = 4
    state["counter.proj.weight"] = torch.ones(1)
    module = {"version": 1}
    state._metadata = {
        "_flambe_directories": {"", "encoder", "encoder.plain.deep", "counter"},
        "keep_vars": False,
        "": {**module, **node_metadata("Model", config="!Model {}\n")},
        "encoder": {**module, **node_metadata("Stack", "1.0.0")},
        "encoder.plain": module,
        "encoder.plain.linear": module,
        "encoder.plain.deep": node_metadata("Stack", "1.1.0"),
        "counter": node_metadata("Counter", "1.0.0"),
    }
    if decoder:
        state["decoder.projection.weight"] = torch.zeros(2)
        state["decoder.depth"] = 2
        state._metadata["_flambe_directories"].add("decoder")
        state._metadata["decoder"] = node_metadata("Stack", "2.0.0")
    return state


def flat(state: State) -> dict[str, Any]:
    """Keys and values, tensors as lists."""
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def versions(state: State) -> dict[str, str]:
    return {
        p: state._metadata[p]["_flambe_version"] for p in state._metadata["_flambe_directories"]
    }


MIGRATED = {
    "step": 7,
    "encoder.depth": 1,
    "encoder.projection.weight": [0.0, 1.0, 2.0, 3.0],
    "encoder.plain.linear.weight": [[1.0, 1.0], [1.0, 1.0]],
    "encoder.plain.deep.projection.weight": [0.0, 1.0, 2.0],
    "encoder.plain.deep.depth": 4,
    "counter.proj.weight": [1.0],
}
MIGRATED_VERSIONS = {"": "0.0.0", "encoder": "2.0.0", "encoder.plain.deep": "2.0.0"}


@pytest.mark.parametrize("reverse", [False, True], ids=["registered-in-order", "reversed"])
def test_every_stack_moves_to_2_0(reverse: bool) -> None:
    """1.0.0 takes both steps, 1.1.0 the rename only, 2.0.0 and the Counter none."""
    original = model_state()
    before = describe(original)
    migrated = stack_migrations(reverse).apply(original)
    assert describe(original) == before
    expected = {**MIGRATED, "decoder.projection.weight": [0.0, 0.0], "decoder.depth": 2}
    assert flat(migrated) == expected
    assert versions(migrated) == {**MIGRATED_VERSIONS, "decoder": "2.0.0", "counter": "1.0.0"}
    metadata = migrated._metadata
    assert metadata["encoder"]["version"] == 1
    assert metadata["encoder.plain"] == metadata["encoder.plain.linear"] == {"version": 1}
    assert metadata["keep_vars"] is False
    assert metadata["counter"] == original._metadata["counter"]
    assert metadata["decoder"] == original._metadata["decoder"]


def test_a_target_version_stops_the_chain() -> None:
    migrated = stack_migrations().apply(model_state(decoder=False), {"Stack": "1.1.0"})
    assert flat(migrated) == {
        **flat(model_state(decoder=False)),
        "encoder.depth": 1,
    }
    assert versions(migrated) == {
        "": "0.0.0",
        "encoder": "1.1.0",
        "encoder.plain.deep": "1.1.0",
        "counter": "1.0.0",
    }


def test_only_the_classes_named_move() -> None:
    state = model_state()
    assert stack_migrations().apply(state, {"Counter": "1.0.0"}) is state


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"Stack": "3.0.0"}, "to 3.0.0 (stopped at 2.0.0)"),
        ({"Stack": "1.1.0"}, "takes class Stack from 2.0.0 to 1.1.0"),
        ({"Counter": "2.0.0"}, "takes class Counter from 1.0.0 to 2.0.0"),
    ],
)
def test_an_unreachable_version_is_a_load_error(targets: dict[str, str], message: str) -> None:
    with pytest.raises(LoadError, match=re.escape(message)):
        stack_migrations().apply(model_state(), targets)


@pytest.mark.parametrize(
    ("source", "accepted", "refused"),
    [
        ("1.x", ["1.0.0", "1.1.0", "1.9.3"], ["0.9.0", "2.0.0"]),
        (">=1.0,<2", ["1.0.0", "1.9.3"], ["0.9.9", "2.0.0"]),
        ("1.2.0", ["1.2.0"], ["1.2.1", "1.1.0"]),
    ],
)
def test_step_sources(source: str, accepted: list[str], refused: list[str]) -> None:
    registry = ClassMigrations()
    registry.register("Stack", source, "2.0.0")(rename_projection)
    for version in accepted:
        assert [str(step.target) for step in registry.chain("Stack", version)] == ["2.0.0"]
    for version in refused:
        assert registry.chain("Stack", version) == []


@pytest.mark.parametrize(
    ("source", "target"),
    [("1.x", "1.5.0"), (">=1.0", "2.0.0"), ("2.0.0", "2.0.0"), ("banana", "2.0.0"), ("1.x", "two")],
)
def test_a_step_that_could_never_stop_is_refused(source: str, target: str) -> None:
    with pytest.raises(ValueError):
        ClassMigrations().register("Stack", source, target)


def test_a_failing_step_is_a_load_error_naming_it() -> None:
    def lose_count(state: dict[str, Any]) -> dict[str, Any]:
        del state["count"]
        return state

    registry = stack_migrations()
    registry.register("Counter", "1.x", "2.0.0")(lose_count)
    message = "lose_count of Counter to 2.0.0 failed: KeyError: 'count'"
    with pytest.raises(LoadError, match=re.escape(message)):
        registry.apply(model_state())


def node_records(root: Path, folder: str) -> dict[str, Any]:
    """What the save at `root` records of the node in `folder`: version.txt and state.pt."""
    node = root / folder
    saved = torch.load(node / "state.pt", weights_only=False)
    return {
        "version.txt": (node / "version.txt").read_text(),
        "state.pt": saved._metadata[""]["_flambe_version"],
    }


@pytest.mark.parametrize("protocol", [1, 2])
def test_a_save_records_the_new_versions(tmp_path: Path, protocol: int) -> None:
    save_state_to_file(stack_migrations().apply(model_state()), tmp_path / "m", protocol=protocol)
    for folder in STACK_FOLDERS.values():
        assert node_records(tmp_path / "m", folder) == {
            "version.txt": "Stack:2.0.0",
            "state.pt": "2.0.0",
        }
    assert node_records(tmp_path / "m", "counter")["version.txt"] == "Counter:1.0.0"
    if protocol == 2:
        manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
        recorded = {node["prefix"]: node["version"] for node in manifest["nodes"]}
        assert recorded == {**MIGRATED_VERSIONS, "decoder": "2.0.0", "counter": "1.0.0"}


@pytest.fixture
def old_model(tmp_path: Path) -> Path:
    """A protocol 1 save of the Stacks before migration."""
    save_state_to_file(model_state(decoder=False), tmp_path / "old", protocol=1)
    return tmp_path / "old"


def test_the_loader_brings_classes_to_the_versions_asked(old_model: Path) -> None:
    registry = stack_migrations()
    state = load_state_from_file(
        old_model, class_versions={"Stack": "2.0.0"}, class_migrations=registry
    )
    assert flat(state) == MIGRATED
    assert versions(state) == {**MIGRATED_VERSIONS, "counter": "1.0.0"}
    assert describe(state) == describe(registry.apply(load_state_from_file(old_model)))
    halfway = load_state_from_file(
        old_model, class_versions={"Stack": "1.1.0"}, class_migrations=registry
    )
    assert versions(halfway)["encoder"] == "1.1.0"


def test_the_documented_registration_feeds_the_loader(
    monkeypatch: pytest.MonkeyPatch, old_model: Path
) -> None:
    """`flambe_compat.register_class_migration` fills the registry loads use by default."""
    monkeypatch.setattr(default_registry, "steps", [])
    flambe_compat.register_class_migration("Stack", "1.0.0", "1.1.0")(add_depth)
    flambe_compat.register_class_migration("Stack", "1.x", "2.0.0")(rename_projection)
    assert flat(load_state_from_file(old_model, class_versions={"Stack": "2.0.0"})) == MIGRATED


@pytest.mark.parametrize("to", ["2.0", "1.4"])
def test_upgrade_applies_class_migrations(old_model: Path, tmp_path: Path, to: str) -> None:
    result = upgrade(old_model, tmp_path / "new", to=to, class_migrations=stack_migrations())
    assert result.classes == {"encoder": "2.0.0", "encoder.plain.deep": "2.0.0"}
    assert result.destination == tmp_path / "new"
    assert flat(load_state_from_file(result.destination)) == MIGRATED
    for folder in STACK_FOLDERS.values():
        assert node_records(result.destination, folder)["version.txt"] == "Stack:2.0.0"

"""A node folder of a saved tree (`checkpoint/model`) loads on its own, as flambe allowed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from flambe_compat import load, load_state_from_file, validate
from flambe_compat.cli import main
from flambe_compat.schema import schema_problems
from tests.corpus import CORPUS, archives
from tests.sample_graphs import legacy_module

WRAPPER = CORPUS / "0.4.18-zip" / "wrapper-dir"
FOLDERS = [a for a in archives() if a.mode == "dir" and len(a.directories) > 1]


def _sub_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("state.pt") if p.parent != root)


@pytest.mark.parametrize("archive", FOLDERS, ids=[a.id for a in FOLDERS])
def test_every_node_folder_is_valid_on_its_own(archive: Any) -> None:
    """From 0.4.12 flambe's root state.pt records the tree; a node folder's does not."""
    for folder in _sub_folders(archive.path):
        report = validate(folder)
        assert report.valid, report.render()
        assert report.subtree == (archive.release_tuple >= (0, 4, 12))


def test_a_subtree_is_reported_as_such() -> None:
    report = validate(WRAPPER / "model")
    assert report.render().endswith("2 nodes, a sub-tree)")
    assert report.as_json()["subtree"] is True
    whole = validate(WRAPPER)
    assert not whole.subtree and "subtree" not in whole.as_json()


def test_only_one_of_the_tree_records_is_a_problem(tmp_path: Path) -> None:
    """A root state.pt with keep_vars but no _flambe_directories is not a sub-tree."""
    folder = tmp_path / "model"
    folder.mkdir()
    for file in (WRAPPER / "model").iterdir():
        if file.is_file():
            (folder / file.name).write_bytes(file.read_bytes())
    state = torch.load(folder / "state.pt", weights_only=False)
    state._metadata["keep_vars"] = False
    torch.save(state, folder / "state.pt")
    report = validate(folder)
    assert not report.valid
    assert [(p.path, p.rule.rsplit("/", 1)[-1]) for p in report.problems] == [
        ("state.pt", "dependentRequired")
    ]


def test_the_subtree_state_is_the_tree_state_below_its_prefix() -> None:
    whole = load_state_from_file(WRAPPER)
    model = load_state_from_file(WRAPPER / "model")
    assert list(model) == [k.removeprefix("model.") for k in whole if k.startswith("model.")]
    for key, value in model.items():
        assert (
            torch.equal(value, whole[f"model.{key}"])
            if isinstance(value, torch.Tensor)
            else (value == whole[f"model.{key}"])
        )
    assert model._metadata["_flambe_directories"] == {"", "inner"}
    assert model._metadata[""]["_flambe_class"] == "Stack"
    assert model._metadata["inner"]["_flambe_class"] == "MLP"


def test_the_subtree_object_loads() -> None:
    sample_models = legacy_module("sample_models")
    stack = load(WRAPPER / "model")
    assert isinstance(stack, sample_models.Stack)
    assert stack.steps == [1, 2, 3]
    whole = load(WRAPPER)
    assert torch.equal(stack.proj.weight, whole.model.proj.weight)
    x = torch.ones(2, 3)
    assert torch.equal(stack.inner.net(x), whole.model.inner.net(x))


def test_the_json_report_of_a_subtree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--json", str(WRAPPER / "model")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert schema_problems(report, "validate-report.json") == []
    assert report["reports"][0]["subtree"] is True

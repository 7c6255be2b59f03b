"""`flambe-compat inspect --objects` and `validate --rebuild [--plugins MODULE]`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from flambe_compat import State, save_state_to_file
from flambe_compat.cli import EXIT_INVALID, EXIT_USAGE, EXIT_VALID, main
from flambe_compat.tree import node_metadata

PLUGIN = textwrap.dedent(
    """\
    from flambe.compile import Component

    class Gadget(Component):
        def __init__(self, size=1):
            self.size = size
            self.register_attrs('size')
    """
)


def _archive(tmp_path: Path, config: str, name: str = "a") -> Path:
    state = State({"size": 3})
    state._metadata = {
        "": node_metadata("Gadget", config=config),
        "_flambe_directories": {""},
        "keep_vars": False,
    }
    save_state_to_file(state, tmp_path / name)
    return tmp_path / name


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "cli_gadgets.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    return "cli_gadgets"


def test_inspect_objects_lists_tags_and_missing_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _archive(tmp_path, "!nowhere_cli.Gadget\nsize: !torch.Linear {in_features: 1}\n")
    assert main(["inspect", "--objects", str(path)]) == EXIT_VALID
    out = capsys.readouterr().out.splitlines()
    assert out[1] == ". !nowhere_cli.Gadget  MISSING"
    assert out[2].startswith("  size !torch.Linear  torch.nn.modules.linear.Linear")
    assert out[-1] == "2 tags, 1 missing"


def test_validate_rebuild_lists_missing_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _archive(tmp_path, "!nowhere_cli.Gadget\nsize: 1\n")
    assert main(["validate", "--rebuild", str(path)]) == EXIT_INVALID
    out = capsys.readouterr().out
    assert "cannot rebuild, missing classes: !nowhere_cli.Gadget (root, line 1)" in out


def test_validate_rebuild_with_plugins(
    tmp_path: Path, plugin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _archive(tmp_path, f"!{plugin}.Gadget\nsize: 1\n")
    assert main(["validate", "--rebuild", "--plugins", plugin, "--json", str(path)]) == EXIT_VALID
    document = json.loads(capsys.readouterr().out)
    assert document["valid"] and document["reports"][0]["rebuild"] == {
        "ok": True,
        "missing": [],
        "error": None,
    }
    assert main(["inspect", "--objects", "--plugins", plugin, str(path)]) == EXIT_VALID
    assert f"{plugin}.Gadget" in capsys.readouterr().out.splitlines()[1]


def test_validate_rebuild_reports_objects_that_do_not_build(
    tmp_path: Path, plugin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _archive(tmp_path, f"!{plugin}.Gadget\nwrong: 1\n")
    assert main(["validate", "--rebuild", "--plugins", plugin, str(path)]) == EXIT_INVALID
    assert "cannot rebuild: " in capsys.readouterr().out


def test_a_plugin_that_fails_to_import_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _archive(tmp_path, "!x.Y {}\n")
    assert main(["validate", "--rebuild", "--plugins", "no_such_plugin_x", str(path)]) == EXIT_USAGE
    assert "cannot import a plugin" in capsys.readouterr().err


def test_inspect_objects_without_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _archive(tmp_path, "")
    assert main(["inspect", "--objects", str(path)]) == EXIT_INVALID
    assert "no config" in capsys.readouterr().err

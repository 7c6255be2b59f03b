"""The CI integrations: the pre-commit hook (`.pre-commit-hooks.yaml`) run by
`pre-commit try-repo`, and the shell steps of the GitHub Action (`action.yml`).

pre-commit builds its own virtualenv and pip-installs this repository into it, torch
included: `PIP_CONSTRAINT` pins torch to the local CPU wheel (`constraints.txt`); the
other packages come from the package index pip is configured with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator

from tests.corpus import copy_of

REPO = Path(__file__).resolve().parent.parent
SARIF_SCHEMA = json.loads((REPO / "tests" / "sarif" / "sarif-schema-2.1.0.json").read_text())


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def pip_environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PIP_CONSTRAINT=str(REPO / "constraints.txt"),
        PRE_COMMIT_HOME=str(home),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_COMPILE="1",  # no bytecode for torch's thousands of files: minutes saved
    )
    # pre-commit itself comes from this virtualenv
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding a good folder archive, a good tarball and a bad archive."""
    root = tmp_path_factory.mktemp("precommit") / "project"
    (root / "models" / "bad").mkdir(parents=True)
    copy_of("0.4.18-zip/wrapper-dir", root / "models")
    copy_of("0.4.18-zip/mlp-tgz.tar.gz", root / "models")
    bad = copy_of("0.4.18-zip/counter-dir", root / "models" / "bad")
    (bad / "state.pt").write_bytes(b"truncated")
    (root / "README.md").write_text("models\n")
    git("init", "-q", cwd=root)
    git("add", ".", cwd=root)
    git("commit", "-qm", "models", cwd=root)
    return root


def test_the_hook_manifest_is_valid() -> None:
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "flambe-compat-validate"
    assert hook["entry"] == "flambe-compat validate --from-files"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pre_commit",
            "validate-manifest",
            str(REPO / ".pre-commit-hooks.yaml"),
        ],
        check=True,
    )


@pytest.mark.slow
def test_pre_commit_try_repo(project: Path, tmp_path: Path) -> None:
    env = pip_environment(tmp_path / "pre-commit-home")
    command = [sys.executable, "-m", "pre_commit", "try-repo", str(REPO), "flambe-compat-validate"]
    everything = subprocess.run(
        [*command, "--all-files", "--verbose"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = everything.stdout + everything.stderr
    assert everything.returncode == 1, output
    assert "flambe-compat validate" in output and "Failed" in output
    assert "models/bad/counter-dir: invalid" in output
    assert "models/wrapper-dir: valid" in output and "models/mlp-tgz.tar.gz: valid" in output
    assert "3 archives, 1 invalid" in output  # every file mapped to its archive, each once
    good = subprocess.run(
        [*command, "--files", "models/wrapper-dir/model/state.pt", "models/mlp-tgz.tar.gz"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Passed" in good.stdout


def action_steps() -> dict[str, dict[str, Any]]:
    """The steps of action.yml by id (or by the action they use)."""
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    return {step.get("id") or step["uses"]: step for step in action["runs"]["steps"]}


def run_step(
    step: dict[str, Any], expressions: dict[str, str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """A `run:` step as GitHub runs it: `bash --noprofile --norc -eo pipefail`, its `env:`
    with each `${{ ... }}` expression filled in from `expressions`."""
    assert step["shell"] == "bash"
    filled = {}
    for key, value in (step.get("env") or {}).items():
        text = str(value)
        for expression, replacement in expressions.items():
            text = text.replace("${{ " + expression + " }}", replacement)
        assert "${{" not in text, f"an expression the test does not fill in: {text}"
        filled[key] = text
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=cwd,
        env={**env, **filled},
        capture_output=True,
        text=True,
        timeout=1800,
    )


def inputs(**given: str) -> dict[str, str]:
    """The action's inputs with their defaults, as `inputs.NAME` expressions."""
    action = yaml.safe_load((REPO / "action.yml").read_text())
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    values.update({name.replace("_", "-"): value for name, value in given.items()})
    return {f"inputs.{name}": value for name, value in values.items()}


def runner_env(tmp_path: Path, bin_folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{bin_folder}{os.pathsep}{env.get('PATH', '')}",
        GITHUB_OUTPUT=str(tmp_path / "github_output"),
        GITHUB_STEP_SUMMARY=str(tmp_path / "step_summary"),
    )
    return env


def validate_and_judge(
    project: Path, tmp_path: Path, bin_folder: Path, **given: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, str], dict[str, str]]:
    """The validate step, then the verdict step with validate's outputs."""
    steps = action_steps()
    expressions = inputs(**given)
    env = runner_env(tmp_path, bin_folder)
    (tmp_path / "github_output").write_text("")
    done = run_step(steps["validate"], expressions, env, project)
    assert done.returncode == 0, done.stdout + done.stderr  # the verdict comes after the upload
    outputs = dict(
        line.split("=", 1) for line in (tmp_path / "github_output").read_text().splitlines()
    )
    expressions.update({f"steps.validate.outputs.{k}": v for k, v in outputs.items()})
    verdict = run_step(steps["verdict"], expressions, env, project)
    return verdict, outputs, expressions


def test_the_action_is_a_composite_with_an_upload() -> None:
    steps = action_steps()
    assert list(steps) == [
        "actions/setup-python@v5",
        "install",
        "validate",
        "github/codeql-action/upload-sarif@v3",
        "verdict",
    ]
    upload = steps["github/codeql-action/upload-sarif@v3"]
    assert upload["with"]["sarif_file"] == "${{ steps.validate.outputs.sarif-file }}"
    assert "always()" in upload["if"]


def test_the_action_steps_validate_and_write_sarif(project: Path, tmp_path: Path) -> None:
    """The validate and verdict steps, with this interpreter's flambe-compat on PATH."""
    bin_folder = Path(sys.executable).parent
    verdict, outputs, _ = validate_and_judge(
        project,
        tmp_path,
        bin_folder,
        paths="models/wrapper-dir\n  models/bad  \n\nmodels/mlp-tgz.tar.gz\n",
    )
    assert outputs == {"exit-code": "1", "sarif-file": "flambe-compat.sarif"}
    log = json.loads((project / "flambe-compat.sarif").read_text())
    Draft4Validator(SARIF_SCHEMA).validate(log)
    uris = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        for r in log["runs"][0]["results"]
    }
    assert uris == {"models/bad/counter-dir/state.pt"}  # relative to the workspace
    summary = (tmp_path / "step_summary").read_text()
    assert summary.startswith("### flambe-compat validate: invalid archives")
    assert "models/bad/counter-dir: state.pt" in summary
    assert verdict.returncode == 1 and "::error::" in verdict.stdout
    lenient, _, _ = validate_and_judge(
        project, tmp_path, bin_folder, paths="models/bad", fail_on_invalid="false"
    )
    assert lenient.returncode == 0
    passed, outputs, _ = validate_and_judge(
        project, tmp_path, bin_folder, paths="models/wrapper-dir", sarif_file="good.sarif"
    )
    assert passed.returncode == 0 and outputs["exit-code"] == "0"
    assert json.loads((project / "good.sarif").read_text())["runs"][0]["results"] == []
    missing, outputs, _ = validate_and_judge(project, tmp_path, bin_folder, paths="no/such/path")
    assert (missing.returncode, outputs["exit-code"]) == (2, "2")


def test_the_action_refuses_empty_paths(project: Path, tmp_path: Path) -> None:
    env = runner_env(tmp_path, Path(sys.executable).parent)
    done = run_step(action_steps()["validate"], inputs(paths=" \n "), env, project)
    assert done.returncode == 2 and "names no path" in done.stdout


@pytest.mark.slow
def test_the_action_installs_and_validates_in_a_fresh_environment(
    project: Path, tmp_path: Path
) -> None:
    """The install step in a fresh virtualenv (its `python` first on PATH, as
    setup-python leaves it), then the validate step with what it installed."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    expressions = {**inputs(torch_index_url=""), "github.action_path": str(REPO)}
    env = runner_env(tmp_path, venv / "bin")
    env.update(PIP_CONSTRAINT=str(REPO / "constraints.txt"), PIP_NO_COMPILE="1")
    done = run_step(action_steps()["install"], expressions, env, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[-1].startswith("flambe-compat ")
    assert (venv / "bin" / "flambe-compat").is_file()
    verdict, outputs, _ = validate_and_judge(project, tmp_path, venv / "bin", paths="models")
    assert outputs["exit-code"] == "1" and verdict.returncode == 1

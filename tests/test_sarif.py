"""`flambe-compat validate --format sarif`: SARIF 2.1.0 that the official schema accepts.

The schema is vendored in `tests/sarif/` (its origin is in the README there).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from jsonschema import Draft4Validator

from flambe_compat import validate
from flambe_compat.cli import main
from flambe_compat.sarif import RULES, sarif_log
from tests.corpus import CORPUS, copy_of

SCHEMA = json.loads(
    (Path(__file__).parent / "sarif" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8")
)
GOOD = CORPUS / "0.4.18-zip" / "counter-dir"


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sarif")
    bad = copy_of("0.4.13-legacy/wrapper-dir", root)
    (bad / "model" / "source.py").unlink()
    (bad / "counter" / "version.txt").write_text("Kounter:0.0.0")
    (root / "unsafe").mkdir()
    unsafe = copy_of("0.4.18-legacy/counter-dir", root / "unsafe")
    torch.save({"c": collections.Counter("ab")}, unsafe / "stash.pkl")
    broken = root / "broken.pkl"
    broken.write_bytes(b"\x80\x02not a pickle")
    return {"bad": bad, "unsafe": unsafe, "broken": broken}


def sarif_of(capsys: pytest.CaptureFixture[str], *paths: Path, strict: bool = False) -> Any:
    code = main(
        ["validate", "--format", "sarif", *(["--strict"] if strict else []), *map(str, paths)]
    )
    out = capsys.readouterr().out
    log = json.loads(out)
    Draft4Validator(SCHEMA).validate(log)
    return code, log


def test_the_vendored_schema_is_sarif_2_1_0() -> None:
    Draft4Validator.check_schema(SCHEMA)
    assert SCHEMA["id"].endswith("/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json")


def test_one_result_per_problem(
    capsys: pytest.CaptureFixture[str], archives: dict[str, Path]
) -> None:
    paths = [GOOD, archives["bad"], archives["unsafe"], archives["broken"]]
    code, log = sarif_of(capsys, *paths)
    assert code == 1
    reports = [validate(path) for path in paths]
    (run,) = log["runs"]
    problems = [(r.source, p) for r in reports for p in r.problems]
    assert len(run["results"]) == len(problems) > 3
    rules = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert sorted(rules) == sorted({p.rule for _, p in problems})  # each rule once
    assert {"allow-list", "decode"} <= set(rules)
    for result, (source, problem) in zip(run["results"], problems, strict=True):
        assert result["ruleId"] == problem.rule
        assert rules[result["ruleIndex"]] == problem.rule
        assert result["message"]["text"] == problem.render(source)
        assert result["level"] == "error"
        (location,) = result["locations"]
        uri = location["physicalLocation"]["artifactLocation"]["uri"]
        where = Path(source) / problem.path
        # a folder archive's problem points at the file it names, when it exists
        expected = where if where.is_file() and Path(source).is_dir() else Path(source)
        assert uri == expected.as_uri()  # absolute paths as file URIs
        if problem.path:
            assert location["logicalLocations"] == [
                {"fullyQualifiedName": problem.path, "kind": "member"}
            ]
    assert run["tool"]["driver"]["name"] == "flambe-compat"


def test_a_valid_archive_gives_an_empty_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, log = sarif_of(capsys, GOOD)
    assert code == 0
    assert log["runs"][0]["results"] == [] and log["runs"][0]["tool"]["driver"]["rules"] == []


def test_strict_problems_are_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    strict = copy_of("0.4.18-zip/counter-dir", tmp_path)
    (strict / "notes.txt").write_text("not flambe's")
    code, log = sarif_of(capsys, strict, strict=True)
    assert code == 1
    (result,) = log["runs"][0]["results"]
    assert (result["ruleId"], result["level"]) == ("strict-extra-file", "warning")
    (rule,) = log["runs"][0]["tool"]["driver"]["rules"]
    assert rule["defaultConfiguration"] == {"level": "warning"}
    assert rule["shortDescription"]["text"] == RULES["strict-extra-file"]


def test_schema_rules_are_described_by_their_pointer() -> None:
    from flambe_compat.problems import Problem
    from flambe_compat.report import Report

    rule = "protocol-1.json#/properties/nodes/items/required"
    report = Report("m.tar.gz", problems=[Problem("a b/state.pt", rule, "missing")])
    log = sarif_log([report])
    Draft4Validator(SCHEMA).validate(log)
    (described,) = log["runs"][0]["tool"]["driver"]["rules"]
    assert described["shortDescription"]["text"] == (
        "The archive breaks properties/nodes/items/required of schemas/protocol-1.json"
    )
    absolute = sarif_log([Report("/data/m.tar.gz", problems=report.problems)])
    location = absolute["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "file:///data/m.tar.gz"


def test_one_machine_format_at_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--format", "sarif", "--jsonl", str(GOOD)]) == 2
    assert "--jsonl" in capsys.readouterr().err
    assert main(["validate", "--format", "sarif", "--json", str(GOOD)]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and "--json" in printed.err

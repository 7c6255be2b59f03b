"""Validation reports as SARIF 2.1.0, the format code scanning (GitHub, GitLab, IDEs) reads.

One run of the `flambe-compat` tool; one result per problem, its `ruleId` the problem's
rule (a schema rule is the schema and the JSON pointer of the broken keyword), located at
the archive file, or at the file inside a folder archive that the problem concerns, with
the file inside the archive also given as a logical location. `tool.driver.rules` lists
each rule met once. Problems found only by `--strict` are warnings, the others errors.

>>> from flambe_compat.problems import Problem
>>> from flambe_compat.report import Report
>>> report = Report("m.tar.gz", problems=[Problem("state.pt", "decode", "truncated")])
>>> log = sarif_log([report])
>>> result = log["runs"][0]["results"][0]
>>> result["ruleId"], result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
('decode', 'm.tar.gz')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from . import __version__
from .problems import Problem
from .report import Report

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/flambe-compat/"
RULES = {
    "allow-list": "A payload names a global outside the allow-list",
    "config": "config.yaml cannot be checked",
    "container": "The archive cannot be opened",
    "decode": "A payload cannot be decoded",
    "directories": "The folders and _flambe_directories disagree",
    "key-owner": "A state key belongs to a child Component's folder",
    "links": "Links and special files are refused",
    "manifest": "manifest.json cannot be read",
    "manifest-files": "Files and manifest.json disagree",
    "manifest-sha256": "A file does not match its checksum in manifest.json",
    "manifest-size": "A file does not match its size in manifest.json",
    "node-metadata": "version.txt and the state's metadata disagree",
    "revision": "The format revision cannot be recognised",
    "strict-config": "An empty root config (strict)",
    "strict-extra-file": "A file flambe does not write (strict)",
    "strict-semver": "A class version that is not MAJOR.MINOR.PATCH (strict)",
    "text": "A text file cannot be read",
    "version": "version.txt holds no version",
}
"""Short descriptions of the rules checked in code; schema rules are described by pointer."""


def sarif_log(reports: Sequence[Report]) -> dict[str, Any]:
    """The SARIF 2.1.0 log of `reports` (one run), as a JSON-ready dict."""
    rules: dict[str, int] = {}
    results = []
    for report in reports:
        for problem in report.problems:
            index = rules.setdefault(problem.rule, len(rules))
            results.append(_result(report.source, problem, index))
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "flambe-compat",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [_rule(rule) for rule in rules],
                    }
                },
                "results": results,
            }
        ],
    }


def _rule(rule: str) -> dict[str, Any]:
    if rule in RULES:
        text = RULES[rule]
    elif "#/" in rule:
        schema, pointer = rule.split("#/", 1)
        text = f"The archive breaks {pointer or 'the root'} of schemas/{schema}"
    else:
        text = f"flambe-compat rule {rule}"
    return {
        "id": rule,
        "shortDescription": {"text": text},
        "defaultConfiguration": {"level": _level(rule)},
    }


def _level(rule: str) -> str:
    return "warning" if rule.startswith("strict-") else "error"


def _result(source: str, problem: Problem, index: int) -> dict[str, Any]:
    location: dict[str, Any] = {
        "physicalLocation": {"artifactLocation": _artifact(source, problem)}
    }
    if problem.path:
        location["logicalLocations"] = [{"fullyQualifiedName": problem.path, "kind": "member"}]
    return {
        "ruleId": problem.rule,
        "ruleIndex": index,
        "level": _level(problem.rule),
        "message": {"text": problem.render(source)},
        "locations": [location],
    }


def _artifact(source: str, problem: Problem) -> dict[str, Any]:
    """The archive, or the file a problem names inside a folder archive when it exists
    (code scanning shows results on files)."""
    path = Path(source)
    if problem.path and path.is_dir() and (path / problem.path).is_file():
        path = path / problem.path
    if path.is_absolute():
        return {"uri": path.as_uri()}
    return {"uri": quote(PurePosixPath(*path.parts).as_posix() if path.parts else os.curdir)}

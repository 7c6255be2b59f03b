"""Objects we save in protocol 1, real flambe 0.4.18's `load()` rebuilds: same state, same outputs.

The graphs are legacy user code (tests/legacy, written for flambe) imported through the
shim: Components with a factory tag, a link, a torch class, `_state`/`_load_state` hooks
and registered attributes, and the corpus's sample graphs, each saved in all four modes.
Skipped when the oracle is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from flambe_compat import save
from flambe_compat.objects import from_config
from tests.corpus import describe
from tests.oracle import Oracle, find_oracle
from tests.sample_graphs import legacy_module

ORACLE = find_oracle()
pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(ORACLE is None, reason="the flambe oracle is not installed"),
]
SCRIPT = Path(__file__).resolve().parent / "oracle_objects.py"
MODES = {"dir": (False, False), "tgz": (True, False), "pkl": (False, True), "pkltgz": (True, True)}


def _graphs() -> dict[str, Any]:
    legacy_models = legacy_module("legacy_models")
    sample_models = legacy_module("sample_models")
    graphs = {"pipeline": legacy_models.train(from_config(legacy_models.PIPELINE))}
    for name, config in sample_models.CONFIGS.items():
        graphs[name] = from_config(config)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in graphs["wrapper"].model.parameters():
            parameter.add_(torch.randn_like(parameter))
    graphs["wrapper"].counter.count = 11
    return graphs


def test_flambe_rebuilds_what_we_save(tmp_path: Path) -> None:
    assert ORACLE is not None
    oracle: Oracle = ORACLE
    graphs = _graphs()
    example = legacy_module("legacy_models").example_input()
    expected: dict[str, Any] = {}
    for name, obj in graphs.items():
        for mode, (compress, pickle_only) in MODES.items():
            base = tmp_path / f"{name}-{mode}"
            save(obj, base, compress=compress, pickle_only=pickle_only, protocol=1)
            suffix = (".pkl" if pickle_only else "") + (".tar.gz" if compress else "")
            expected[f"{base}{suffix}"] = obj
    readings = oracle.run(SCRIPT, *expected, cwd=tmp_path)
    assert len(readings) == len(expected) == 4 * len(graphs)
    for path, obj in expected.items():
        got = readings[path]
        assert "error" not in got, (path, got)
        assert got["class"] == type(obj).__name__
        want = describe(obj.get_state())
        assert sorted(got["state"]["keys"]) == sorted(want["keys"]), path
        assert got["state"]["values"] == want["values"], path
        for prefix in want["metadata"]["_flambe_directories"]:
            assert (
                got["state"]["metadata"][prefix]["_flambe_config"]
                == (want["metadata"][prefix]["_flambe_config"])
            ), (path, prefix)
        if "forward" in vars(type(obj)):
            with torch.no_grad():
                assert got["output"] == obj.forward(example).tolist(), path

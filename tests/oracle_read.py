"""Read archives with real flambe 0.4.18; run by the oracle's interpreter (see tests/oracle.py).

    oracle_read.py [--objects] PATH...

Prints one JSON document: per path, `describe()` of flambe's `load_state_from_file`, or
with `--objects` the class and `describe()` of `get_state()` of the object flambe's `load`
rebuilds (the graphs of `sample_models`); `{"error": ...}` when flambe fails. flambe is
imported in `main()` only, so that this module can be collected without it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from tests.corpus import describe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", action="store_true", help="rebuild objects with load()")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    readings: dict[str, Any] = {}
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON document
        import flambe.compile.serialization as serialization

        serialization.setup_default_modules = lambda: None  # needs ray
        if args.objects:
            import sample_models  # noqa: F401  (registers the YAML tags of the graphs)
        for path in args.paths:
            try:
                if args.objects:
                    obj = serialization.load(path)
                    readings[path] = {
                        "class": type(obj).__name__,
                        "state": describe(obj.get_state()),
                    }
                else:
                    readings[path] = describe(serialization.load_state_from_file(path))
            except Exception as error:
                readings[path] = {"error": f"{type(error).__name__}: {error}"[:500]}
    json.dump(readings, sys.stdout)


if __name__ == "__main__":
    main()

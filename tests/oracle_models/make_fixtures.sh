#!/usr/bin/env bash
# Regenerate fixtures/flambe-objects: the graphs of graph_models.py saved by each real flambe
# release (legacy torch format; 0.4.18 also zip), with their recorded outputs.
# Usage: tests/oracle_models/make_fixtures.sh [OUT=fixtures/flambe-objects]
# Needs the oracle (../shared/flambe-oracle/setup.sh); FLAMBE_ENV, FLAMBE_VERSIONS and
# FLAMBE_ORACLE_DIR override where it is.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/../../fixtures/flambe-objects}
ENV=${FLAMBE_ENV:-/root/.flambe-oracle/env}; VERS=${FLAMBE_VERSIONS:-/root/.flambe-oracle/versions}
STUBS=${FLAMBE_ORACLE_DIR:-$HERE/../../../shared/flambe-oracle}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
run() {  # PYTHONPATH-FIRST RELEASE FORMAT
  rm -rf "$OUT/$2-$3"
  # a fixed hash seed: fields build their vocabularies from sets of strings
  PYTHONHASHSEED=0 PYTHONPATH=$1$STUBS:$HERE "$ENV/bin/python" "$HERE/gen_objects.py" "$OUT/$2-$3" --expect "$2" --torch-format "$3"
}
for v in 0.4.3 0.4.6 0.4.11 0.4.13; do run "$VERS/$v:" "$v" legacy; done
run "" 0.4.18 legacy
run "" 0.4.18 zip

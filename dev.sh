#!/usr/bin/env bash
# Developer entry points; each sets up its own virtualenv (.venv) first.
#   bash dev.sh demo [ARCHIVE]  read a real flambe archive and print what it holds
#   bash dev.sh test            lint, type-check and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
VENV=${FLAMBE_COMPAT_VENV:-.venv}
PY=$VENV/bin/python

setup() {
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".$1" 2>&1 \
    | { grep -v -e '^WARNING: Location' -e 'Running pip as' || true; }
}

case "${1:-}" in
  demo)
    setup ""
    "$VENV/bin/flambe-compat" inspect "${2:-fixtures/flambe-corpus/0.4.18-legacy/wrapper-tgz.tar.gz}"
    ;;
  test)
    setup "[test]"
    "$VENV/bin/ruff" check flambe_compat migrations tests benchmarks
    "$VENV/bin/ruff" format --check flambe_compat migrations tests benchmarks
    "$VENV/bin/mypy"
    # a private temp root: pytest's cleanup of a shared one can trip on deep trees
    BASETEMP=$(mktemp -d)
    trap 'rm -rf "$BASETEMP"' EXIT
    # one worker per core, at most 4 (each imports torch); `-n 0` after it runs serially
    "$PY" -m pytest --basetemp="$BASETEMP/pytest" -n auto --maxprocesses 4 "${@:2}"
    ;;
  *)
    echo "usage: bash dev.sh demo [ARCHIVE] | bash dev.sh test [PYTEST ARGS]" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# `make test` / `make faults`: bring the stack up, run the tests, and stop what was started whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
cleanup() { "$PY" -m devstack.demo down || true; "$PY" -m devstack.scale down || true; "$PY" -m devstack down || true; }
trap cleanup EXIT
"$PY" -m devstack up
"$PY" -m devstack.seed
set +e
# Arguments name what to run (`make faults` passes tests/faults); none means the whole suite.
[ "$#" -gt 0 ] || set -- tests
"$PY" -m pytest -ra -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"

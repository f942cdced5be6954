#!/usr/bin/env bash
# `make test`: bring the stack up, run every test, and stop what was started whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
cleanup() { "$PY" -m devstack.demo down || true; "$PY" -m devstack down || true; }
trap cleanup EXIT
"$PY" -m devstack up
"$PY" -m devstack.seed
set +e
"$PY" -m pytest tests -ra -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"

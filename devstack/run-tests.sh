#!/usr/bin/env bash
# `make test` / `make faults`: bring the stack up, run the tests, and stop what was started whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
unit_pid=""
cleanup() {
  # The unit tests run in the background: an early exit (stack-up failed) must not leave them running.
  if [ -n "$unit_pid" ]; then kill "$unit_pid" 2>/dev/null || true; fi
  "$PY" -m devstack.demo down || true; "$PY" -m devstack.scale down || true; "$PY" -m devstack down || true
}
trap cleanup EXIT
# Before the unit tests open their thousands of loopback connections: none of them may be given one of the
# stack's ports as its own, whose TIME_WAIT would then keep a service from binding it (devstack/ports.py).
"$PY" -m devstack.ports
# Arguments name what to run (`make faults` passes tests/faults); none means the whole suite. Then the unit
# tests, which need no stack, run while it starts (their report follows the stack tests'), all but
# tests/unit/test_compose.py, which reads the compose file with the docker CLI the stack installs.
if [ "$#" -eq 0 ]; then
  unit_log=$(mktemp)
  "$PY" -m pytest -ra -p no:cacheprovider tests/unit --ignore=tests/unit/test_compose.py >"$unit_log" 2>&1 &
  unit_pid=$!
  set -- tests/e2e tests/faults tests/integration tests/unit/test_compose.py
fi
"$PY" -m devstack up
"$PY" -m devstack.seed
set +e
"$PY" -m pytest -ra -p no:cacheprovider "$@"
status=$?
if [ -n "$unit_pid" ]; then
  wait "$unit_pid"
  unit_status=$?
  unit_pid=""
  echo "---- the unit tests (run while the stack started) ----"
  cat "$unit_log"
  rm -f "$unit_log"
  [ "$status" -ne 0 ] || status=$unit_status
fi
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"

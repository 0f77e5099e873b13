#!/usr/bin/env bash
# Runs the default test suite (slow end-to-end tests are behind `-m slow`).
# pytest's exit code 5 ("no tests collected") is a failure here, on purpose.
# Tests run on PYTEST_WORKERS processes (default 2, pytest-xdist); an idle
# worker steals queued tests from the busy one (--dist worksteal: 10:17 here
# where --dist loadfile took 12:35 the same day). PYTEST_WORKERS=0 runs
# everything in this process.
set -uo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
python3 -m pytest -n "${PYTEST_WORKERS:-2}" --dist worksteal "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; failing" >&2
  exit 1
fi
exit "$rc"

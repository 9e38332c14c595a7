#!/usr/bin/env bash
# What `make test` runs after setup: ruff, mypy --strict, then pytest (unit, integration, e2e),
# and the total time since `make test` started (its first argument, epoch seconds).
set -uo pipefail
start=${1:-$(date +%s)}
cd "$(dirname "$0")/.."
bin=.venv/bin
status=0

step() { echo; echo "==> $*"; }

step "ruff check ."
$bin/ruff check . || status=1

step "mypy --strict"
$bin/mypy || status=1

step "pytest"
$bin/pytest -q -ra --durations=15 -p no:cacheprovider
rc=$?
if [ $rc -eq 5 ]; then
  # A run that collects nothing proves nothing: fail it on purpose.
  echo "pytest collected no tests: failing deliberately"
  rc=1
fi
[ $rc -ne 0 ] && status=1

echo
echo "make test: total $(( $(date +%s) - start ))s ($([ $status -eq 0 ] && echo passed || echo FAILED))"
exit $status

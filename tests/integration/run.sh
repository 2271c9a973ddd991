#!/usr/bin/env bash
# Runs every tests/integration/t_*.sh (or those named: run.sh t_worker t_upgrade), each starting
# its own cluster of the PostgreSQL that PG selects, and ends with the plain 'N passed, N failed' line.
set -uo pipefail
cd "$(dirname "$0")"
passed=0; failed=0; failures=()
tests=("$@"); [ ${#tests[@]} -gt 0 ] || tests=(t_*.sh)
for t in "${tests[@]}"; do
  t=${t%.sh}.sh
  echo "== ${t%.sh}"
  if bash "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("${t%.sh}"); fi
done
((failed)) && echo "failed: ${failures[*]}"
echo "integration: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

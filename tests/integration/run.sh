#!/usr/bin/env bash
# Runs every tests/integration/t_*.sh (each starts its own cluster) and ends with the plain
# 'N passed, N failed' line.
set -uo pipefail
cd "$(dirname "$0")"
passed=0; failed=0; failures=()
for t in t_*.sh; do
  echo "== ${t%.sh}"
  if bash "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("${t%.sh}"); fi
done
((failed)) && echo "failed: ${failures[*]}"
echo "integration: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

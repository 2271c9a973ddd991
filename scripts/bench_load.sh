#!/usr/bin/env bash
# The load test as a bench: runs tests/integration/t_load.sh (8 pgbench clients, the application's
# categorize transaction; without the extension, then with it while a snapshot is taken every
# second and uploaded) RUNS times on fresh clusters, and reports the TPS of each run and the
# median of the per-run ratios. Every run also passes t_load's checks, or the bench stops.
# Usage: scripts/bench_load.sh [runs=3] [seconds=60]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; SECS=${2:-60}
[ "${SKIP_INSTALL:-}" = 1 ] || bash scripts/install.sh >/dev/null
source scripts/bench_lib.sh
echo "machine: $(machine)"
ratios=()
for run in $(seq 1 "$RUNS"); do
  line=$(LB_LOAD_SECONDS=$SECS bash tests/integration/t_load.sh | tee .tmp/bench-load-$run.log | grep 'info: load TPS') \
    || { echo "run $run failed:"; tail -20 .tmp/bench-load-$run.log; exit 1; }
  without=$(sed -n 's/.*without the extension \([0-9.]*\),.*/\1/p' <<<"$line")
  with=$(sed -n 's/.*with it \([0-9.]*\) .*/\1/p' <<<"$line")
  ratio=$(awk -v a="$with" -v b="$without" 'BEGIN { printf "%.3f", a / b }')
  ratios+=("$ratio")
  printf 'run %d: TPS without %.0f, with %.0f, with/without %s\n' "$run" "$without" "$with" "$ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END { printf "median with/without over %d runs: %s\n", NR, (NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2) }'

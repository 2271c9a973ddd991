#!/usr/bin/env bash
# Snapshot time against session size, 1,000 to 200,000 documents: legacy_snapshot vs the
# hand-written json_agg SQL (and the COPY floor), interleaved per round exactly as in
# scripts/bench_snapshot.sh (same functions, scripts/bench_snapshot.sql). Writes the medians to
# benchmarks/snapshot_scaling.csv and draws benchmarks/snapshot_scaling.png
# (scripts/plot_snapshot_scaling.py, matplotlib installed from PyPI into .tmp/plotenv).
# Usage: scripts/bench_snapshot_scaling.sh [rounds=7]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-7}
SIZES=(1000 2000 5000 10000 20000 50000 100000 200000)
DIR=.tmp/bench-scaling; PORT=54343
source scripts/bench_lib.sh
if [ ! -x .tmp/plotenv/bin/python ]; then
  python3 -m venv .tmp/plotenv
  .tmp/plotenv/bin/pip install --quiet 'matplotlib>=3.8,<4'
fi
fresh_bench_cluster "shared_buffers = 1GB" "work_mem = 64MB"
for n in "${SIZES[@]}"; do P -d bench -v sid="s$n" -v docs="$n" -f tests/fixtures/seed.sql; done
P -d bench -c "CREATE EXTENSION legacy_backup" -c "VACUUM ANALYZE"
machine=$(machine)
echo "machine: $machine"
mkdir -p benchmarks
runs=""; for n in "${SIZES[@]}"; do runs+="SELECT pg_temp.run_bench('s$n', $ROUNDS);"$'\n'; done
P -d bench -At <<SQL >benchmarks/snapshot_scaling.csv
\i scripts/bench_snapshot.sql
\o /dev/null
$runs
\o
SELECT 'documents,variant,median_ms,min_ms,max_ms,median_ratio_to_legacy_snapshot';
SELECT substr(session, 2) || ',' || variant || ',' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2)
       || ',' || round(min(ms)::numeric, 2) || ',' || round(max(ms)::numeric, 2) || ','
       || round((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY o.ms / e.ms) FROM bench_runs o JOIN bench_runs e USING (session, round)
                 WHERE o.session = b.session AND o.variant = b.variant AND e.variant = 'legacy_snapshot')::numeric, 2)
FROM bench_runs b GROUP BY session, variant ORDER BY substr(session, 2)::int, variant;
SQL
cat benchmarks/snapshot_scaling.csv
.tmp/plotenv/bin/python scripts/plot_snapshot_scaling.py benchmarks/snapshot_scaling.csv benchmarks/snapshot_scaling.png "$machine, $ROUNDS rounds"
echo "wrote benchmarks/snapshot_scaling.png"

#!/usr/bin/env bash
# Snapshot build benchmark: legacy_snapshot vs the best hand-written json_agg SQL vs the COPY floor,
# on an 8,000-document and a 100,000-document session, interleaved in one run.
# Usage: scripts/bench_snapshot.sh [rounds_8k] [rounds_100k]
set -euo pipefail
cd "$(dirname "$0")/.."
R8=${1:-21}; R100=${2:-7}
DIR=.tmp/bench-snapshot; PORT=54341
source scripts/bench_lib.sh
fresh_bench_cluster "shared_buffers = 512MB" "work_mem = 64MB"
P -d bench -v sid=b8k -v docs=8000 -f tests/fixtures/seed.sql
P -d bench -v sid=b100k -v docs=100000 -v cats=40 -v months=24 -f tests/fixtures/seed.sql
P -d bench -c "CREATE EXTENSION legacy_backup" -c "VACUUM ANALYZE"
echo "machine: $(machine)"
P -d bench <<SQL
\i scripts/bench_snapshot.sql
-- Same content check: the two JSON builders agree on every document's category and status.
SELECT count(*) AS documents_differing
FROM json_to_recordset(legacy_snapshot('b8k')->'documents') a(id text, "categoryId" text, "categoryName" text, status text)
FULL JOIN json_to_recordset(pg_temp.handwritten_snapshot('b8k')->'documents') b(id text, "categoryId" text, "categoryName" text, status text)
  USING (id)
WHERE a."categoryId" IS DISTINCT FROM b."categoryId" OR a.status IS DISTINCT FROM b.status
   OR a."categoryName" IS DISTINCT FROM b."categoryName";
\o /dev/null
SELECT pg_temp.run_bench('b8k', $R8);
SELECT pg_temp.run_bench('b100k', $R100);
\o
\echo
\echo 'Median milliseconds per variant:'
SELECT session, variant, count(*) AS rounds, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS median_ms,
       round(min(ms)::numeric, 2) AS min_ms, round(max(ms)::numeric, 2) AS max_ms
FROM bench_runs GROUP BY 1, 2 ORDER BY 1 DESC, 4;
\echo 'Median of per-round ratios (targets: hand-written / legacy_snapshot >= 4, legacy_snapshot / COPY <= 2.5):'
SELECT session,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY hand / ext)::numeric, 2) AS "hand-written / legacy_snapshot",
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ext / copy)::numeric, 2) AS "legacy_snapshot / COPY floor"
FROM (SELECT session, round,
             max(ms) FILTER (WHERE variant = 'legacy_snapshot') AS ext,
             max(ms) FILTER (WHERE variant = 'hand-written SQL') AS hand,
             max(ms) FILTER (WHERE variant = 'COPY floor') AS copy
      FROM bench_runs GROUP BY 1, 2) r
GROUP BY 1 ORDER BY 1 DESC;
SQL

#!/usr/bin/env bash
# CPU instructions per categorize transaction, counted by valgrind's callgrind in the backend
# that runs them: no trigger / a hand-written PL/pgSQL row trigger / legacy_backup's triggers.
# Instruction counts repeat to within a fraction of a percent from run to run, where pgbench TPS
# on this 2-core machine moves by 5-10% (BENCHMARKS.md): this shows what each approach costs
# the backend, the TPS bench (bench_triggers.sh) what it costs under load.
# Each variant: the session's 8,000 documents reset to uncategorized, VACUUM ANALYZE and a
# CHECKPOINT, then a server started under callgrind and `pgbench -c 1 -t N -M prepared` with a
# fixed seed, so every variant runs the same transactions on the same rows.
# Usage: scripts/bench_trigger_instructions.sh [transactions=2000] [repeats=2]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}; REPEATS=${2:-2}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
DIR=.tmp/bench-instructions; PORT=54343
source scripts/bench_lib.sh
fresh_bench_cluster "shared_buffers = 512MB" "synchronous_commit = off"
P -d bench -v sid=bt -v docs=8000 -f tests/fixtures/seed.sql
P -d bench -c "CREATE EXTENSION legacy_backup" -f scripts/bench_triggers.sql -c "VACUUM ANALYZE"
echo "machine: $(machine); $N transactions per run, $REPEATS runs per variant"

results=$DIR/instructions.tsv; : >"$results"
for repeat in $(seq 1 "$REPEATS"); do
  for v in none plpgsql_row extension; do
    bash scripts/pgcluster.sh start "$DIR" "$PORT" >/dev/null
    P -d bench -c "SELECT bench_use('none')" \
      -c "UPDATE extracted_documents SET category_id = NULL, status = 'Uncategorized', categorized_by = NULL, categorized_at = NULL WHERE session_id = 'bt'" \
      -c "SELECT bench_use('$v')" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
    bash scripts/pgcluster.sh stop "$DIR"
    out=$PWD/$DIR/callgrind; rm -rf "$out"; mkdir -p "$out"; chown postgres "$out"
    runuser -u postgres -- valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out/cg.%p" \
      "$BIN/postgres" -D "$PWD/$DIR/data" -c autovacuum=off >"$DIR/valgrind.log" 2>&1 &
    for _ in $(seq 120); do P -d bench -c "SELECT 1" >/dev/null 2>&1 && break; sleep 1; done
    runuser -u postgres -- "$BIN/pgbench" -n -h "$PWD/$DIR/sock" -p "$PORT" -U postgres -c 1 -j 1 -t "$N" \
      --random-seed=7 -M prepared -D sid=bt -D docs=8000 -D cats=40 -f tests/fixtures/categorize.pgbench bench >"$DIR/pgbench.log" 2>&1
    runuser -u postgres -- "$BIN/pg_ctl" -D "$PWD/$DIR/data" -m fast -w stop >/dev/null
    wait
    # The pgbench backend is the process with the most instructions.
    total=$(for f in "$out"/cg.*; do awk '/^summary:/ {print $2}' "$f"; done | sort -n | tail -1)
    printf '%s\t%s\t%s\n' "$repeat" "$v" "$total" >>"$results"
  done
done
bash scripts/pgcluster.sh start "$DIR" "$PORT" >/dev/null
P -d bench <<SQL
CREATE TEMP TABLE r (repeat int, variant text, instructions float8);
\copy r FROM '$results'
\echo 'Instructions per categorize transaction (the whole backend, start-up included, divided by $N):'
SELECT variant, string_agg(round(instructions / $N)::text, ', ' ORDER BY repeat) AS per_run,
       round(min(instructions) / $N) AS best
FROM r GROUP BY variant ORDER BY best;
\echo 'Per transaction, over no trigger, and the ratio legacy_backup / hand-written row trigger:'
SELECT round((e - n) / $N) AS "legacy_backup - none", round((h - n) / $N) AS "hand-written - none",
       round((e - h) / $N) AS "legacy_backup - hand-written", round((e / h)::numeric, 4) AS "legacy_backup / hand-written"
FROM (SELECT min(instructions) FILTER (WHERE variant = 'none') AS n,
             min(instructions) FILTER (WHERE variant = 'plpgsql_row') AS h,
             min(instructions) FILTER (WHERE variant = 'extension') AS e FROM r) x;
SQL

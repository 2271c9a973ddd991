#!/usr/bin/env bash
# Snapshots taken while assistants categorize never contradict themselves. Two pgbench clients
# run the application's categorize transaction (document + counters in one transaction) while
# snapshots are taken in a loop. Counters start exact, so a snapshot that read documents and
# counters at different moments would report drift; every snapshot must report none.
source "$(dirname "$0")/lib.sh"
start_cluster
q postgres -c "CREATE DATABASE conc"
load_app conc cs 2000
q conc -f "$ROOT/tests/fixtures/app_workload.sql"
q conc -c "SELECT app_recount('cs')" -c "CREATE EXTENSION legacy_backup" >/dev/null
check "counters exact before the run" 0 "$(q conc -c "SELECT json_array_length(legacy_snapshot('cs')->'consistency')")"

cat >"$CLUSTER/categorize.sql" <<'SQL'
\set d random(1, 2000)
\set c random(1, 40)
BEGIN;
SELECT app_categorize('cs-doc-' || lpad(:d::text, 6, '0'), 'cs-cat-' || lpad(:c::text, 3, '0'), 'u-paralegal');
COMMIT;
SQL
"$BIN/pgbench" -n -h "$CLUSTER/sock" -p "$PORT" -U postgres -c 2 -j 2 -T 8 --max-tries=20 -f "$CLUSTER/categorize.sql" conc \
  >"$CLUSTER/pgbench.log" 2>&1 &
bench=$!
taken=0
while kill -0 "$bench" 2>/dev/null; do
  q conc -c "SELECT legacy_snapshot_take('cs')" >/dev/null
  taken=$((taken + 1))
done
wait "$bench" || { cat "$CLUSTER/pgbench.log"; exit 1; }
echo "  info: $(grep -E '^number of transactions actually processed' "$CLUSTER/pgbench.log"), $taken snapshots taken meanwhile"

check "snapshots were taken during the load" t "$( [ "$taken" -ge 5 ] && echo t || echo f)"
check "no snapshot contradicts itself" 0 "$(q conc -c "
  SELECT count(*) FROM legacy_backup.snapshots s, LATERAL (SELECT convert_from(s.body, 'UTF8')::jsonb AS j) b
  WHERE jsonb_array_length(b.j->'consistency') <> 0
     OR (b.j->'stats'->>'total')::int <> 2000
     OR (b.j->'stats'->>'categorized')::int <> (SELECT sum((c->>'realDocumentCount')::int) FROM jsonb_array_elements(b.j->'categories') c)
     OR (b.j->'stats'->>'categorized')::int <> (SELECT count(*) FROM jsonb_array_elements(b.j->'documents') d WHERE d->>'status' = 'Categorized')")"
check "every stored body matches its sha256" 0 "$(q conc -c "SELECT count(*) FROM legacy_backup.snapshots WHERE sha256 <> encode(sha256(body), 'hex')")"
check "every snapshot has a distinct key" "$taken" "$(q conc -c "SELECT count(DISTINCT snapshot_key) FROM legacy_backup.snapshots")"

#!/usr/bin/env bash
# Load: 8 pgbench clients run the application's categorize transaction on the 8,000-document
# session for LB_LOAD_SECONDS (default 60) without the extension, then as long with it while a
# snapshot is taken every second and the worker uploads each one. Afterwards: no error or
# deadlock, every snapshot agrees with itself, every upload matches its stored bytes, and the
# log holds exactly one row per real change. The witness for "real change" is independent of
# the extension: logical decoding (test_decoding) of the UPDATEs PostgreSQL itself wrote, with
# REPLICA IDENTITY FULL so each carries its old row. Prints both TPS figures for BENCHMARKS.md.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3.sh"
SECS=${LB_LOAD_SECONDS:-60}
start_s3
BUCKET_DIR=$S3_DIR/data/legacy-import
start_cluster_with_worker "wal_level = logical"
q postgres -c "CREATE DATABASE app"
load_app app ld 8000
q app -f "$ROOT/tests/fixtures/app_workload.sql"
# Counters start exact; the workload keeps session and batch counters exact (category counters
# drift by the application's own rule: categorizing again into the same category adds 1).
q app -c "SELECT app_recount('ld')" -c "ALTER TABLE extracted_documents REPLICA IDENTITY FULL" -c "VACUUM ANALYZE" >/dev/null

run_pgbench() { # label -> prints tps; fails on any aborted client or failed transaction
  local log=$CLUSTER/pgbench-$1.log
  "$BIN/pgbench" -n -h "$CLUSTER/sock" -p "$PORT" -U postgres -c 8 -j 2 -T "$SECS" -M prepared \
    -D sid=ld -D docs=8000 -D cats=40 -f "$ROOT/tests/fixtures/categorize.pgbench" app >"$log" 2>&1 \
    || { echo "  FAILED: pgbench ($1) exited non-zero"; cat "$log"; exit 1; }
  grep -q '^number of failed transactions: 0' "$log" || ! grep -q '^number of failed transactions' "$log" \
    || { echo "  FAILED: pgbench ($1) reports failed transactions"; cat "$log"; exit 1; }
  awk '/^tps/ {print $3; exit}' "$log"
}
log_mark() { wc -c <"$CLUSTER/server.log"; }
errors_since() { tail -c +"$(( $1 + 1 ))" "$CLUSTER/server.log" | grep -c 'ERROR\|deadlock\|PANIC\|FATAL' || true; }

echo "without the extension: 8 clients, ${SECS} s"
mark=$(log_mark)
tps_without=$(run_pgbench without)
check "no error or deadlock in the server log (without)" 0 "$(errors_since "$mark")"

echo "with the extension: 8 clients, ${SECS} s, a snapshot every second, uploads by the worker"
q app -c "CREATE EXTENSION legacy_backup" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
q app -c "SELECT pg_create_logical_replication_slot('witness', 'test_decoding')" >/dev/null
CLEANUPS=('q app -c "SELECT pg_drop_replication_slot('"'witness'"')" >/dev/null 2>&1' "${CLEANUPS[@]}")
log_before=$(q app -c "SELECT coalesce(max(id), 0) FROM category_assignment_logs")
mark=$(log_mark)
(
  taken=0 fails=0
  end=$(( $(date +%s) + SECS ))
  while [ "$(date +%s)" -lt "$end" ]; do
    if q app -c "SELECT legacy_snapshot_take('ld')" >/dev/null 2>>"$CLUSTER/snapshots.err"; then taken=$((taken + 1)); else fails=$((fails + 1)); fi
    sleep "0.$(( 1000 - 10#$(date +%3N) ))"  # to the next whole second
  done
  echo "$taken $fails" >"$CLUSTER/snapshots.count"
) &
snapper=$!
tps_with=$(run_pgbench with)
wait "$snapper"
read -r taken snap_fails <"$CLUSTER/snapshots.count"
check "every snapshot call succeeded" 0 "$snap_fails"
check "about one snapshot per second" t "$( [ "$taken" -ge $(( SECS * 8 / 10 )) ] && echo t || echo f)"
check "no error or deadlock in the server log (with)" 0 "$(errors_since "$mark")"

wait_for "the worker uploaded every snapshot" "SELECT count(*) FILTER (WHERE upload_state = 'uploaded') || '/' || count(*) FROM legacy_backup.snapshots WHERE session_id = 'ld'" "$taken/$taken" 120
mismatched=0
while read -r key sha; do
  [ "$(sha256sum "$BUCKET_DIR/$key" 2>/dev/null | cut -d' ' -f1)" = "$sha" ] || mismatched=$((mismatched + 1))
done < <(q app -F ' ' -c "SELECT snapshot_key, sha256 FROM legacy_backup.snapshots WHERE session_id = 'ld'")
check "every object in S3 equals its stored bytes" 0 "$mismatched"

check "every snapshot agrees with itself (session and batch counters = document rows, category real counts = document rows)" 0 "$(q app -c "
  SELECT count(*) FROM legacy_backup.snapshots s, LATERAL (SELECT convert_from(s.body, 'UTF8')::jsonb AS j) b
  WHERE s.session_id = 'ld' AND (
        EXISTS (SELECT FROM jsonb_array_elements(b.j->'consistency') i WHERE i->>'entity' <> 'category')
     OR (b.j->>'categorizedCount')::int <> (SELECT count(*) FROM jsonb_array_elements(b.j->'documents') d WHERE d->>'status' = 'Categorized')
     OR EXISTS (SELECT FROM jsonb_array_elements(b.j->'categories') c
                WHERE (c->>'realDocumentCount')::int <> (SELECT count(*) FROM jsonb_array_elements(b.j->'documents') d WHERE d->>'categoryId' = c->>'id'))
     OR jsonb_array_length(b.j->'documents') <> 8000)")"

# What PostgreSQL wrote, decoded: one line per updated document row, old row then new row.
q app -c "
  CREATE TABLE witness AS
  WITH u AS (
    SELECT xid::text::bigint AS xid, split_part(data, ' new-tuple: ', 1) AS o, split_part(data, ' new-tuple: ', 2) AS n
    FROM pg_logical_slot_get_changes('witness', NULL, NULL, 'skip-empty-xacts', '1')
    WHERE data LIKE 'table public.extracted_documents: UPDATE: old-key: %')
  SELECT xid, substring(n from '^id\[text\]:''([^'']*)''') AS document_id,
         nullif(btrim(substring(o from ' category_id\[text\]:(null|''[^'']*'')'), ''''), 'null') AS old_category_id,
         nullif(btrim(substring(n from ' category_id\[text\]:(null|''[^'']*'')'), ''''), 'null') AS new_category_id,
         substring(o from ' status\[[^]]*\]:''([^'']*)''') AS old_status,
         substring(n from ' status\[[^]]*\]:''([^'']*)''') AS new_status
  FROM u"
updates=$(q app -c "SELECT count(*) FROM witness")
real=$(q app -c "SELECT count(*) FROM witness WHERE old_category_id IS DISTINCT FROM new_category_id OR old_status IS DISTINCT FROM new_status")
logged=$(q app -c "SELECT count(*) FROM category_assignment_logs WHERE id > $log_before")
echo "  info: $updates document UPDATEs decoded, $real real changes, $logged log rows"
check "the witness parsed every row" 0 "$(q app -c "SELECT count(*) FROM witness WHERE document_id IS NULL OR old_status IS NULL OR new_status IS NULL")"
check "no-op updates happened (so the test can tell them apart)" t "$(q app -c "SELECT count(*) > 0 FROM witness WHERE old_category_id IS NOT DISTINCT FROM new_category_id AND old_status IS NOT DISTINCT FROM new_status")"
check "exactly one log row per real change" "$real" "$logged"
check "log rows = real changes, row for row (xid, document, old, new)" "0 0" "$(q app -c "
  WITH w AS (SELECT xid, document_id, old_category_id, new_category_id, old_status, new_status FROM witness
             WHERE old_category_id IS DISTINCT FROM new_category_id OR old_status IS DISTINCT FROM new_status),
       l AS (SELECT txid::text::bigint, document_id, old_category_id, new_category_id, old_status::text, new_status::text
             FROM category_assignment_logs WHERE id > $log_before AND source = 'app')
  SELECT (SELECT count(*) FROM (TABLE w EXCEPT ALL TABLE l) a) || ' ' || (SELECT count(*) FROM (TABLE l EXCEPT ALL TABLE w) b)")"
check "attributed to the SET LOCAL actor" 0 "$(q app -c "SELECT count(*) FROM category_assignment_logs WHERE id > $log_before AND (changed_by <> 'u-paralegal' OR attribution <> 'setting')")"

ratio=$(awk -v a="$tps_with" -v b="$tps_without" 'BEGIN { printf "%.3f", a / b }')
echo "  info: load TPS (8 clients, ${SECS} s, $(nproc) cores): without the extension $tps_without, with it $tps_with (ratio $ratio), $taken snapshots taken and uploaded"

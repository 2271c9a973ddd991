#!/usr/bin/env bash
# pg_dump of a database using legacy_backup, pg_restore into an empty database: the extension
# comes back attached, with its snapshots (exact bytes), its job queue, its audit trail (and the
# ids' sequences), its triggers and the application's added columns.
source "$(dirname "$0")/lib.sh"
start_cluster
cd "$CLUSTER"

q postgres -c "CREATE DATABASE src"
load_app src dump-s1 500
q src -c "CREATE EXTENSION legacy_backup"
q src -c "SELECT legacy_snapshot_take('dump-s1', 'u-partner')" >/dev/null
q src -c "UPDATE extracted_documents SET status = 'Skipped', category_id = NULL, updated_at = now() WHERE id = 'dump-s1-doc-000001'"
q src -c "SELECT legacy_snapshot_take('dump-s1')" >/dev/null

runuser -u postgres -- "$BIN/pg_dump" -h "$CLUSTER/sock" -p "$PORT" -U postgres -Fc -f "$CLUSTER/src.dump" src
q postgres -c "CREATE DATABASE dst"
runuser -u postgres -- "$BIN/pg_restore" -h "$CLUSTER/sock" -p "$PORT" -U postgres --exit-on-error -d dst "$CLUSTER/src.dump" 2>"$CLUSTER/restore.log" \
  || { cat "$CLUSTER/restore.log"; exit 1; }

fingerprint="SELECT string_agg(id || ':' || sha256 || ':' || encode(sha256(body), 'hex') || ':' || upload_state || ':' || taken_by || ':' || snapshot_key, ',' ORDER BY snapshot_at) FROM legacy_backup.snapshots"
jobs="SELECT string_agg(id || ':' || kind || ':' || state || ':' || coalesce(snapshot_id, '-'), ',' ORDER BY id) FROM legacy_backup.jobs"
check "job queue restored (state intact)" "$(q src -c "$jobs")" "$(q dst -c "$jobs")"
check "two upload jobs in it" 2 "$(q dst -c "SELECT count(*) FROM legacy_backup.jobs WHERE kind = 'upload'")"
check "two snapshots restored" 2 "$(q dst -c 'SELECT count(*) FROM legacy_backup.snapshots')"
check "snapshot rows and bodies identical" "$(q src -c "$fingerprint")" "$(q dst -c "$fingerprint")"
check "restored extension is attached" "" "$(q dst -c "SELECT check_name FROM legacy_backup_health() WHERE NOT ok AND check_name NOT IN ('background worker', 'backup sealing key')")"
check "last_snapshot_at restored" "$(q src -c 'SELECT last_snapshot_at FROM legacy_import_sessions')" "$(q dst -c 'SELECT last_snapshot_at FROM legacy_import_sessions')"
same="SELECT md5((legacy_snapshot('dump-s1')::jsonb - 'snapshotAt')::text)"
check "live snapshot identical after restore" "$(q src -c "$same")" "$(q dst -c "$same")"
check "new snapshot after restore" "t" "$(q dst -c "SELECT legacy_snapshot_take('dump-s1') ? 'snapshotId'")"
log="SELECT string_agg(id || ':' || document_id || ':' || coalesce(new_category_id, '-') || ':' || source || ':' || changed_by, ',' ORDER BY id) FROM category_assignment_logs"
check "audit trail identical" "$(q src -c "$log")" "$(q dst -c "$log")"
check "audit trail not empty" t "$(q dst -c "SELECT count(*) > 500 FROM category_assignment_logs")"
q dst -c "UPDATE extracted_documents SET status = 'Skipped', category_id = NULL, updated_at = now() WHERE id = 'dump-s1-doc-000002'"
check "triggers work after restore, ids continue" t \
  "$(q dst -c "SELECT max(id) > (SELECT max(id) FROM category_assignment_logs WHERE document_id <> 'dump-s1-doc-000002') FROM category_assignment_logs WHERE document_id = 'dump-s1-doc-000002'")"
check "every trigger restored and enabled" "" "$(q dst -c "SELECT check_name FROM legacy_backup_health() WHERE check_name LIKE 'trigger %' AND NOT ok")"
check "every trigger of the extension present" "$(q dst -c "SELECT cardinality(legacy_backup_protected_triggers())")" "$(q dst -c "SELECT count(*) FROM legacy_backup_health() WHERE check_name LIKE 'trigger %' AND ok")"
check "audit rows carried" "3" "$(q dst -c "SELECT count(*) FROM legacy_import_audit_logs WHERE action = 'CATEGORIZATION_SNAPSHOT'")"

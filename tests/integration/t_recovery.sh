#!/usr/bin/env bash
# The whole recovery story against s3s-fs: categorize, snapshot (uploaded by the worker), export,
# damage the categorization with a bad bulk UPDATE, restore from the snapshot held in the database
# (exact equality, counters recomputed from rows), lose the snapshot rows, fetch from R2, import,
# equality again. A tampered object fails verification. Partners only.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3.sh"
start_s3
BUCKET_DIR=$S3_DIR/data/legacy-import
CREDENTIALS=$ROOT/.tmp/integration/$TEST_NAME-r2.env
printf 'R2_ACCESS_KEY_ID=%s\nR2_SECRET_ACCESS_KEY=%s\n' "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$CREDENTIALS"
chown postgres "$CREDENTIALS"; chmod 600 "$CREDENTIALS"
start_cluster "legacy_backup.database = 'app'" "legacy_backup.naptime = '1s'" \
  "legacy_backup.r2_endpoint = 'http://127.0.0.1:$S3_PORT'" "legacy_backup.r2_credentials_file = '$CREDENTIALS'"
q postgres -c "CREATE DATABASE app"
load_app app r1 1000
q app -f "$ROOT/tests/fixtures/app_workload.sql"
q app -c "SELECT app_recount('r1')" -c "CREATE EXTENSION legacy_backup" >/dev/null
wait_for() { # what, sql, expected, seconds
  local deadline=$(( $(date +%s%N) + $4 * 1000000000 )) got
  while :; do
    got=$(q app -c "$2" 2>/dev/null || true)
    [ "$got" = "$3" ] && { echo "  ok: $1"; return 0; }
    [ "$(date +%s%N)" -gt "$deadline" ] && { echo "  FAILED: $1: waited $4 s for [$3], last [$got]"; exit 1; }
    sleep 0.05
  done
}
state="SELECT md5(string_agg(id || ':' || coalesce(category_id, '-') || ':' || status || ':' || coalesce(categorized_by, '-'), ',' ORDER BY id)) FROM extracted_documents WHERE session_id = 'r1'"
counters_exact="SELECT json_array_length(legacy_snapshot('r1')->'consistency')"

echo "1-3. categorize, snapshot, export"
q app -c "BEGIN" -c "SET LOCAL legacy_backup.actor = 'u-paralegal'" \
      -c "SELECT app_categorize('r1-doc-000' || (700 + g), 'r1-cat-00' || (1 + g % 9), 'u-paralegal') FROM generate_series(1, 50) g" -c "COMMIT" >/dev/null
good=$(q app -c "$state")
id=$(q app -c "SELECT legacy_snapshot_take('r1', 'u-partner')->>'snapshotId'")
key=$(q app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$id'")
wait_for "snapshot uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id'" uploaded 10
q app -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'r1'" >/dev/null
check "verified in R2" verified "$(q app -c "SELECT legacy_snapshot_verify('$id')->>'result'")"

echo "4. damage: a bad bulk UPDATE"
q app -c "UPDATE extracted_documents SET category_id = 'r1-cat-001', status = 'Categorized', updated_at = now() WHERE session_id = 'r1'" >/dev/null
check "categorization damaged" t "$( [ "$(q app -c "$state")" != "$good" ] && echo t || echo f)"

echo "5. restore from the snapshot held in the database"
check "a paralegal may not restore" 1 "$(q app -c "SELECT legacy_restore_snapshot('$id', 'u-paralegal', false)" 2>&1 | grep -c 'only an active partner')"
dry=$(q app -c "SELECT (r->>'changes') || ' ' || (r->>'dryRun') FROM (SELECT legacy_restore_snapshot('$id', 'u-partner') AS r) x")
echo "  info: dry run: $dry"
check "the dry run changes nothing" t "$( [ "$(q app -c "$state")" != "$good" ] && echo t || echo f)"
q app -c "SELECT legacy_restore_snapshot('$id', 'u-partner', false)" >/dev/null
check "every document's category and status back" "$good" "$(q app -c "$state")"
check "counters recomputed from the rows" 0 "$(q app -c "$counters_exact")"
check "changes logged with source restore" t "$(q app -c "SELECT count(*) > 0 FROM category_assignment_logs WHERE source = 'restore' AND changed_by = 'u-partner'")"
check "SNAPSHOT_RESTORED audit row" 1 "$(q app -c "SELECT count(*) FROM legacy_import_audit_logs WHERE action = 'SNAPSHOT_RESTORED'")"

echo "6. the snapshot rows are lost: fetch from R2, import"
q app -c "UPDATE extracted_documents SET status = 'Skipped', category_id = NULL, updated_at = now() WHERE session_id = 'r1' AND id < 'r1-doc-000500'" >/dev/null
q app -c "DELETE FROM legacy_backup.jobs" -c "DELETE FROM legacy_backup.snapshots" >/dev/null
check "restore by id now fails clearly" 1 "$(q app -c "SELECT legacy_restore_snapshot('$id', 'u-partner', false)" 2>&1 | grep -c 'does not exist')"
q app -c "SELECT legacy_snapshot_import(legacy_snapshot_fetch('$key'), 'u-partner', false)" >/dev/null
check "equality again after import from R2" "$good" "$(q app -c "$state")"
check "counters exact again" 0 "$(q app -c "$counters_exact")"

echo "bad documents change nothing"
before=$(q app -c "$state")
check "malformed JSON" 1 "$(q app -c "SELECT legacy_snapshot_import('{not json', 'u-partner', false)" 2>&1 | grep -c 'invalid input syntax for type json')"
check "wrong format version" 1 "$(q app -c "SELECT legacy_snapshot_import('{\"formatVersion\": 9, \"sessionId\": \"r1\", \"documents\": [], \"stats\": {\"total\": 0}}', 'u-partner', false)" 2>&1 | grep -c 'formatVersion 9')"
check "truncated document" 1 "$(q app -c "SELECT legacy_snapshot_import(jsonb_set(legacy_snapshot_fetch('$key')::jsonb, '{documents}', '[]')::json, 'u-partner', false)" 2>&1 | grep -c 'truncated')"
check "unknown session" 1 "$(q app -c "SELECT legacy_snapshot_import(jsonb_set(legacy_snapshot_fetch('$key')::jsonb, '{sessionId}', '\"nope\"')::json, 'u-partner', false)" 2>&1 | grep -c 'does not exist in this database')"
check "hostile key" 1 "$(q app -c "SELECT legacy_snapshot_fetch('backups/../pst/r1/x.json')" 2>&1 | grep -c 'is not a snapshot key')"
check "nothing changed by bad input" "$before" "$(q app -c "$state")"

echo "a tampered object fails verification"
id2=$(q app -c "SELECT legacy_snapshot_take('r1')->>'snapshotId'")
wait_for "second snapshot uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id2'" uploaded 10
key2=$(q app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$id2'")
sed -i 's/"Categorized"/"Skipped"/' "$BUCKET_DIR/$key2"
check "tampering reported" mismatch "$(q app -c "SELECT legacy_snapshot_verify('$id2')->>'result'")"
check "and recorded" mismatch "$(q app -c "SELECT verify_result FROM legacy_backup.snapshots WHERE id = '$id2'")"
check "never repaired" t "$(grep -q '"Skipped"' "$BUCKET_DIR/$key2" && echo t || echo f)"

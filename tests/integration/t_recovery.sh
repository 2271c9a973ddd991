#!/usr/bin/env bash
# The whole recovery story against s3s-fs: categorize, snapshot (uploaded by the worker), export,
# damage the categorization with a bad bulk UPDATE, restore from the snapshot held in the database
# (exact equality, counters recomputed from rows), lose the snapshot rows, fetch from R2, import,
# equality again. A tampered object fails verification. Manual cleanup: refused for a
# non-partner and a wrong confirmation, previewed, then done by a partner. Partners only.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3.sh"
start_s3
BUCKET_DIR=$S3_DIR/data/legacy-import
# Backups sealed (the firm's setup): after the snapshot rows are lost, the object still proves itself.
SEALING_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
start_cluster_with_worker
q postgres -c "CREATE DATABASE app"
load_app app r1 1000
q app -f "$ROOT/tests/fixtures/app_workload.sql"
q app -c "SELECT app_recount('r1')" -c "CREATE EXTENSION legacy_backup" >/dev/null
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
# A byte changed in the middle (the object is sealed: no text to edit in it).
python3 -c "import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[len(b) // 2] ^= 1; open(p, 'wb').write(bytes(b))" "$BUCKET_DIR/$key2"
tampered=$(sha256sum "$BUCKET_DIR/$key2" | cut -d' ' -f1)
check "tampering reported" mismatch "$(q app -c "SELECT legacy_snapshot_verify('$id2')->>'result'")"
check "and recorded" mismatch "$(q app -c "SELECT verify_result FROM legacy_backup.snapshots WHERE id = '$id2'")"
check "verify never repairs (the scrub does, once its interval has come)" "$tampered" "$(sha256sum "$BUCKET_DIR/$key2" | cut -d' ' -f1)"

echo "7. manual cleanup, by a BusinessOwner (a partner in the application), of all three prefixes"
mkdir -p "$BUCKET_DIR/pst/r1" "$BUCKET_DIR/documents/r1/Inbox" "$BUCKET_DIR/documents/r1x" "$BUCKET_DIR/legacy-import/r1" "$BUCKET_DIR/legacy-import/r1x"
echo pst >"$BUCKET_DIR/pst/r1/archive.pst"
for i in $(seq 1 120); do echo "doc $i" >"$BUCKET_DIR/documents/r1/Inbox/att $i.pdf"; done
for i in $(seq 1 5); do echo "imported $i" >"$BUCKET_DIR/legacy-import/r1/import $i.msg"; done
echo keep >"$BUCKET_DIR/documents/r1x/keep.pdf"
echo keep >"$BUCKET_DIR/legacy-import/r1x/keep.msg"
q app -c "INSERT INTO users (id, email, first_name, last_name, role, status, azure_ad_id) VALUES ('u-owner', 'owner@firm.test', 'Bea', 'Owner', 'BusinessOwner', 'Active', 'aad-owner')" >/dev/null
q app -c "SELECT legacy_snapshot_take('r1')" >/dev/null
wait_for "fresh snapshot uploaded" "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'r1' AND upload_state = 'pending'" 0 10
check "a paralegal is refused" 1 "$(q app -c "SELECT legacy_cleanup_session('r1', 'u-paralegal', 'r1')" 2>&1 | grep -c 'only an active partner')"
check "a wrong confirmation is refused" 1 "$(q app -c "SELECT legacy_cleanup_session('r1', 'u-partner', 'yes')" 2>&1 | grep -c 'confirm must be exactly the session id')"
check "nothing deleted by refusals" 126 "$(find "$BUCKET_DIR/pst/r1" "$BUCKET_DIR/documents/r1" "$BUCKET_DIR/legacy-import/r1" -type f | wc -l)"
check "preview counts the objects under the three prefixes" "126" "$(q app -c "SELECT legacy_cleanup_session('r1', 'u-owner')->>'totalObjects'")"
check "the preview deleted nothing" 126 "$(find "$BUCKET_DIR/pst/r1" "$BUCKET_DIR/documents/r1" "$BUCKET_DIR/legacy-import/r1" -type f | wc -l)"
check "the BusinessOwner's confirmed cleanup returns the deleted count" "126 true" "$(q app -c "SELECT (r->>'deleted') || ' ' || (r->>'finished') FROM (SELECT legacy_cleanup_session('r1', 'u-owner', 'r1') AS r) x")"
check "objects gone" 0 "$(find "$BUCKET_DIR/pst/r1" "$BUCKET_DIR/documents/r1" "$BUCKET_DIR/legacy-import/r1" -type f | wc -l)"
check "neighbours (documents/r1x/, legacy-import/r1x/) and backups kept" "1 1 t" "$(find "$BUCKET_DIR/documents/r1x" -type f | wc -l) $(find "$BUCKET_DIR/legacy-import/r1x" -type f | wc -l) $( [ "$(find "$BUCKET_DIR/backups/r1" -type f | wc -l)" -ge 1 ] && echo t || echo f)"
check "audit row marks it manual, by the BusinessOwner" "true u-owner" "$(q app -c "SELECT (details->>'triggeredManually') || ' ' || user_id FROM legacy_import_audit_logs WHERE action = 'R2_CLEANUP_COMPLETED' AND session_id = 'r1'")"
check "cleaned_up_at set" t "$(q app -c "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'r1'")"
check "a second cleanup is refused" 1 "$(q app -c "SELECT legacy_cleanup_session('r1', 'u-partner', 'r1')" 2>&1 | grep -c 'already cleaned up')"

echo "a long cleanup returns its job id and progress; the job view shows the rest"
q app -v sid=r2 -v docs=20 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null
q app -c "SELECT legacy_snapshot_take('r2')" >/dev/null
wait_for "r2 snapshot uploaded" "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'r2' AND upload_state = 'uploaded'" 1 10
q app -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'r2'" >/dev/null
mkdir -p "$BUCKET_DIR/documents/r2"; for i in $(seq 1 3000); do : >"$BUCKET_DIR/documents/r2/$i.pdf"; done
out=$(q app -c "SET legacy_backup.cleanup_wait = '0'" -c "SELECT (r->>'finished') || ' ' || (r ? 'jobId') FROM (SELECT legacy_cleanup_session('r2', 'u-partner', 'r2') AS r) x" | tail -1)
check "returned before the end, with the job id" "false true" "$out"
wait_for "the job finishes in the worker" "SELECT state FROM legacy_backup_jobs WHERE kind = 'cleanup' AND session_id = 'r2'" succeeded 30
check "all 3,000 gone" 0 "$(find "$BUCKET_DIR/documents/r2" -type f | wc -l)"

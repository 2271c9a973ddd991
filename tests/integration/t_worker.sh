#!/usr/bin/env bash
# The background worker against s3s-fs (which verifies signatures): upload within 2 s of commit
# with the exact bytes; a cleanup of 2,500 objects that leaves every neighbour; wrong
# credentials; the S3 server down; the worker killed with SIGKILL mid-cleanup.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3.sh"
start_s3
BUCKET_DIR=$S3_DIR/data/legacy-import
start_cluster_with_worker "legacy_backup.max_attempts = 5"
q postgres -c "CREATE DATABASE app"
load_app app w1 300
q app -c "CREATE EXTENSION legacy_backup"

echo "upload"
# The worker started before the database existed; it restarts every 5 s until it can connect.
wait_for "worker running" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 15
start=$(date +%s%N)
id=$(q app -c "SELECT legacy_snapshot_take('w1')->>'snapshotId'")
wait_for "snapshot uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id'" uploaded 2
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "  info: commit to uploaded in ${ms} ms"
key=$(q app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$id'")
check "object bytes equal the stored bytes (sha256)" "$(q app -c "SELECT sha256 FROM legacy_backup.snapshots WHERE id = '$id'")" \
  "$(sha256sum "$BUCKET_DIR/$key" | cut -d' ' -f1)"
check "SNAPSHOT_UPLOADED audit row" 1 "$(q app -c "SELECT count(*) FROM legacy_import_audit_logs WHERE action = 'SNAPSHOT_UPLOADED' AND details->>'snapshotId' = '$id'")"
check "readiness reports the upload" true "$(q app -c "SELECT legacy_export_readiness('w1')->>'snapshotUploaded'")"

echo "cleanup of 2,500 objects under the three prefixes, neighbours kept"
mkdir -p "$BUCKET_DIR/pst/w1" "$BUCKET_DIR/documents/w1/sub dir" "$BUCKET_DIR/documents/w1x" "$BUCKET_DIR/documents/other" \
         "$BUCKET_DIR/legacy-import/w1/batch 1" "$BUCKET_DIR/legacy-import/w1x"
for i in $(seq 1 2449); do echo "doc $i" >"$BUCKET_DIR/documents/w1/sub dir/file $i+(x).pdf"; done
# The manual import script's prefix (legacy_backup.cleanup_prefixes' third default).
for i in $(seq 1 50); do echo "imported $i" >"$BUCKET_DIR/legacy-import/w1/batch 1/doc $i.pdf"; done
echo keep >"$BUCKET_DIR/legacy-import/w1x/neighbour.pdf"
echo pst >"$BUCKET_DIR/pst/w1/archive.pst"
echo keep >"$BUCKET_DIR/documents/w1x/neighbour.pdf"
echo keep >"$BUCKET_DIR/documents/other/a.pdf"
q app -c "BEGIN" -c "SET LOCAL legacy_backup.actor = 'u-partner'" \
      -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'w1'" -c "COMMIT" >/dev/null
check "nothing deleted at export" 2500 "$(find "$BUCKET_DIR/pst/w1" "$BUCKET_DIR/documents/w1" "$BUCKET_DIR/legacy-import/w1" -type f | wc -l)"
make_due w1
wait_for "session cleaned up" "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'w1'" t 60
check "all 2,500 objects gone" 0 "$(find "$BUCKET_DIR/pst/w1" "$BUCKET_DIR/documents/w1" "$BUCKET_DIR/legacy-import/w1" -type f 2>/dev/null | wc -l)"
check "neighbour prefix documents/w1x/ kept" 1 "$(find "$BUCKET_DIR/documents/w1x" -type f | wc -l)"
check "neighbour prefix legacy-import/w1x/ kept" 1 "$(find "$BUCKET_DIR/legacy-import/w1x" -type f | wc -l)"
check "other session kept" 1 "$(find "$BUCKET_DIR/documents/other" -type f | wc -l)"
check "backups/ kept" 1 "$(find "$BUCKET_DIR/backups" -type f -name 'categorization-*' | wc -l)"
check "R2_CLEANUP_COMPLETED with the count" 2500 "$(q app -c "SELECT details->>'deleted' FROM legacy_import_audit_logs WHERE action = 'R2_CLEANUP_COMPLETED'")"
check "first 10 keys recorded" 10 "$(q app -c "SELECT jsonb_array_length(details->'firstKeys') FROM legacy_import_audit_logs WHERE action = 'R2_CLEANUP_COMPLETED'")"

echo "the S3 server down: snapshots wait, then upload with no operator action"
load_app app w2 50 2>/dev/null || q app -v sid=w2 -v docs=50 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null
stop_s3
for _ in 1 2 3; do q app -c "SELECT legacy_snapshot_take('w2')" >/dev/null; sleep 0.01; done
# Exported and due, but no snapshot of it is in S3 yet: no cleanup may run.
mkdir -p "$BUCKET_DIR/documents/w2"; echo keep >"$BUCKET_DIR/documents/w2/a.pdf"
export_and_make_due w2
sleep 2
check "nothing marked uploaded while down" 0 "$(q app -c "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'w2' AND upload_state = 'uploaded'")"
check "no cleanup while no snapshot is in S3" "0 f" "$(q app -c "SELECT count(*) || ' ' || (SELECT (cleaned_up_at IS NOT NULL)::text FROM legacy_import_sessions WHERE id = 'w2') FROM legacy_backup.jobs WHERE kind = 'cleanup' AND session_id = 'w2'" | sed 's/false/f/')"
check "the session's files are still there" 1 "$(find "$BUCKET_DIR/documents/w2" -type f | wc -l)"
wait_for "jobs retrying with a readable error" "SELECT count(*) FROM legacy_backup.jobs WHERE session_id = 'w2' AND state = 'retrying' AND last_error LIKE '%could not connect%'" 3 15
start_s3
wait_for "all three uploaded after the server is back" "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'w2' AND upload_state = 'uploaded'" 3 40
wait_for "then the due cleanup runs" "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'w2'" t 30
check "the session's files are gone" 0 "$(find "$BUCKET_DIR/documents/w2" -type f | wc -l)"

echo "wrong credentials"
write_credentials wrong-secret-value
q app -c "SELECT pg_reload_conf()" >/dev/null
sleep 1.5
id=$(q app -c "SELECT legacy_snapshot_take('w2')->>'snapshotId'")
wait_for "upload failed" "SELECT state FROM legacy_backup.jobs WHERE snapshot_id = '$id'" failed 10
err=$(q app -c "SELECT last_error FROM legacy_backup.jobs WHERE snapshot_id = '$id'")
echo "  info: last_error: $err"
check "readable error" 1 "$(echo "$err" | grep -c 'PutObject failed: HTTP 403')"
check "no secret in the error" 0 "$(echo "$err" | grep -c 'wrong-secret-value')"
check "not marked uploaded" failed "$(q app -c "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id'")"
check "no secret in the server log" 0 "$(grep -c 'wrong-secret-value\|'"$S3_SECRET_KEY" "$CLUSTER/server.log" || true)"
check "no secret in the job view" 0 "$(q app -c "SELECT count(*) FROM legacy_backup_jobs WHERE last_error LIKE '%secret%' OR progress::text LIKE '%secret%'")"
write_credentials "$S3_SECRET_KEY"
q app -c "SELECT pg_reload_conf()" >/dev/null

#!/usr/bin/env bash
# Crashes and shutdowns around the worker: SIGKILL mid-cleanup, `pg_ctl stop -m immediate`
# mid-upload, a fast shutdown mid-cleanup (SIGTERM answered promptly). After each restart the
# work completes, and nothing is lost or marked done early. Also: pruning of old snapshot bodies.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3.sh"
start_s3
BUCKET_DIR=$S3_DIR/data/legacy-import
start_cluster_with_worker
q postgres -c "CREATE DATABASE app"
load_app app f1 200
q app -v sid=f2 -v docs=100000 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null
q app -c "CREATE EXTENSION legacy_backup"
worker_pid() { q app -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'"; }
wait_for "worker running" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 15

echo "SIGKILL of the worker mid-cleanup"
q app -c "SELECT legacy_snapshot_take('f1')" >/dev/null
wait_for "snapshot uploaded" "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'f1' AND upload_state = 'uploaded'" 1 10
mkdir -p "$BUCKET_DIR/documents/f1" "$BUCKET_DIR/documents/f1x"
for d in $(seq 1 12); do mkdir -p "$BUCKET_DIR/documents/f1/d$d"; for i in $(seq 1 1000); do : >"$BUCKET_DIR/documents/f1/d$d/$i.pdf"; done; done
echo keep >"$BUCKET_DIR/documents/f1x/keep.pdf"
q app -c "BEGIN" -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'f1'" \
       -c "UPDATE legacy_import_sessions SET cleanup_scheduled_at = now() - interval '1 second' WHERE id = 'f1'" -c "COMMIT" >/dev/null
wait_for "cleanup has started deleting" "SELECT count(*) > 0 FROM legacy_backup.jobs WHERE kind = 'cleanup' AND state = 'running' AND (progress->>'deleted')::int > 0" t 20
kill -9 "$(worker_pid)"
left=$(find "$BUCKET_DIR/documents/f1" -type f | wc -l)
echo "  info: killed with $left of 12000 objects left"
check "killed mid-cleanup (some objects left)" t "$( [ "$left" -gt 0 ] && echo t || echo f)"
check "not marked cleaned up early" t "$(q app -c "SELECT cleaned_up_at IS NULL FROM legacy_import_sessions WHERE id = 'f1'" 2>/dev/null || echo t)"
wait_for "cleanup resumed and finished after the crash restart" "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'f1'" t 60
check "all 12,000 objects gone" 0 "$(find "$BUCKET_DIR/documents/f1" -type f | wc -l)"
check "neighbour kept" 1 "$(find "$BUCKET_DIR/documents/f1x" -type f | wc -l)"
check "snapshot kept" 1 "$(find "$BUCKET_DIR/backups/f1" -type f | wc -l)"
check "the interrupted job was requeued and completed" "succeeded" "$(q app -c "SELECT string_agg(state, ',') FROM legacy_backup.jobs WHERE kind = 'cleanup' AND session_id = 'f1'")"
check "one completion audit row" 1 "$(q app -c "SELECT count(*) FROM legacy_import_audit_logs WHERE action = 'R2_CLEANUP_COMPLETED' AND session_id = 'f1'")"

echo "pg_ctl stop -m immediate mid-upload (100,000-document snapshot)"
id=$(q app -c "SELECT legacy_snapshot_take('f2')->>'snapshotId'")
wait_for "upload running" "SELECT state FROM legacy_backup.jobs WHERE snapshot_id = '$id'" running 20
runuser -u postgres -- "$BIN/pg_ctl" -D "$CLUSTER/data" -m immediate -w stop >/dev/null
check "upload not marked done" pending "$(runuser -u postgres -- "$BIN/postgres" --single -D "$CLUSTER/data" app <<<"SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id'" 2>/dev/null | sed -n 's/.*upload_state = "\(.*\)".*/\1/p' | head -1)"
bash "$ROOT/scripts/pgcluster.sh" start "$CLUSTER" "$PORT" >/dev/null
wait_for "upload completed after restart" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id'" uploaded 60
key=$(q app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$id'")
check "object bytes equal the stored bytes" "$(q app -c "SELECT sha256 FROM legacy_backup.snapshots WHERE id = '$id'")" "$(sha256sum "$BUCKET_DIR/$key" | cut -d' ' -f1)"

echo "fast shutdown mid-cleanup: SIGTERM answered promptly, the cleanup resumes"
mkdir -p "$BUCKET_DIR/documents/f2"
for d in $(seq 1 12); do mkdir -p "$BUCKET_DIR/documents/f2/d$d"; for i in $(seq 1 1000); do : >"$BUCKET_DIR/documents/f2/d$d/$i.pdf"; done; done
q app -c "BEGIN" -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'f2'" \
       -c "UPDATE legacy_import_sessions SET cleanup_scheduled_at = now() - interval '1 second' WHERE id = 'f2'" -c "COMMIT" >/dev/null
wait_for "cleanup has started deleting" "SELECT count(*) > 0 FROM legacy_backup.jobs WHERE kind = 'cleanup' AND session_id = 'f2' AND state = 'running' AND (progress->>'deleted')::int > 0" t 20
t0=$(date +%s%N)
runuser -u postgres -- "$BIN/pg_ctl" -D "$CLUSTER/data" -m fast -w -t 30 stop >/dev/null
stop_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "  info: fast shutdown took ${stop_ms} ms"
check "shutdown within 5 s" t "$( [ "$stop_ms" -lt 5000 ] && echo t || echo f)"
bash "$ROOT/scripts/pgcluster.sh" start "$CLUSTER" "$PORT" >/dev/null
wait_for "cleanup finished after restart" "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'f2'" t 60
check "all objects gone" 0 "$(find "$BUCKET_DIR/documents/f2" -type f | wc -l)"

echo "pruning snapshot bodies past the retention, never the newest uploaded"
q app -c "SELECT legacy_snapshot_take('f1')" >/dev/null
wait_for "second f1 snapshot uploaded" "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'f1' AND upload_state = 'uploaded'" 2 20
q app -c "UPDATE legacy_backup.snapshots SET snapshot_at = snapshot_at - interval '40 days' WHERE session_id = 'f1'"
q app -c "INSERT INTO legacy_backup.jobs (kind, requested_by) VALUES ('prune', 'test')" -c "SELECT pg_notify('x', '')" >/dev/null
wait_for "prune job done" "SELECT state FROM legacy_backup.jobs WHERE kind = 'prune' AND requested_by = 'test'" succeeded 20
check "older body pruned, newest kept" "f,t" "$(q app -c "SELECT string_agg((body IS NOT NULL)::text, ',' ORDER BY snapshot_at) FROM legacy_backup.snapshots WHERE session_id = 'f1'" | sed 's/false/f/g; s/true/t/g')"
check "metadata kept" 2 "$(q app -c "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'f1' AND sha256 IS NOT NULL")"

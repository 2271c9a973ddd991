#!/usr/bin/env bash
# The fault suite. The worker talks to S3 through a proxy that can misbehave (faultproxy.py):
# S3 stopped for 30 s during an upload and a cleanup, S3 answering slower than the timeout, S3
# answering 500s, the S3 server's data folder made read-only; then the worker killed with
# SIGKILL mid-cleanup, `pg_ctl stop -m immediate` mid-upload, and a fast shutdown mid-cleanup.
# Each case ends with the check that nothing was lost and nothing was marked done that was not:
# uploads marked uploaded only with the object's bytes equal to the stored ones, sessions marked
# cleaned up only with every object gone, neighbours and backups kept. Also: pruning of old
# snapshot bodies.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3.sh"
start_s3
start_proxy
S3_ENDPOINT_PORT=$PROXY_PORT
BUCKET_DIR=$S3_DIR/data/legacy-import
start_cluster_with_worker
q postgres -c "CREATE DATABASE app"
load_app app f1 200
q app -v sid=f2 -v docs=100000 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null
q app -c "CREATE EXTENSION legacy_backup"
worker_pid() { q app -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'"; }
wait_for "worker running" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 15

# objects SID N: N empty objects under documents/SID/ (1,000 per folder), and a neighbour.
objects() {
  local d i
  for d in $(seq 1 $(( ($2 + 999) / 1000 ))); do
    mkdir -p "$BUCKET_DIR/documents/$1/d$d"
    for i in $(seq 1 $(( $2 - (d - 1) * 1000 < 1000 ? $2 - (d - 1) * 1000 : 1000 ))); do : >"$BUCKET_DIR/documents/$1/d$d/$i.pdf"; done
  done
  mkdir -p "$BUCKET_DIR/documents/${1}x"; echo keep >"$BUCKET_DIR/documents/${1}x/keep.pdf"
}
left() { find "$BUCKET_DIR/documents/$1" -type f 2>/dev/null | wc -l; }
# A session seeded, snapshotted and uploaded (cleanup needs a verified snapshot in S3).
session_with_backup() { # sid
  q app -v sid="$1" -v docs=50 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null
  q app -c "SELECT legacy_snapshot_take('$1')" >/dev/null
  wait_for "$1: first snapshot uploaded" "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = '$1' AND upload_state = 'uploaded'" 1 20
}
# While S3 misbehaves: the new snapshot is not marked uploaded, the session not marked cleaned
# up, and both jobs wait for another attempt with a readable error.
check_nothing_marked_done() { # sid snapshot_id error_pattern
  wait_for "$1: upload and cleanup retrying with a readable error ($3)" \
    "SELECT count(*) FROM legacy_backup.jobs WHERE session_id = '$1' AND kind IN ('upload', 'cleanup') AND state = 'retrying' AND last_error ~ '$3'" 2 60
  check "$1: new snapshot not marked uploaded" pending "$(q app -c "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$2'")"
  check "$1: session not marked cleaned up" t "$(q app -c "SELECT cleaned_up_at IS NULL FROM legacy_import_sessions WHERE id = '$1'")"
}
# Once S3 is healthy: everything completes, with no operator action, exactly once.
check_completed() { # sid snapshot_id
  wait_for "$1: upload completed" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$2'" uploaded 90
  local key; key=$(q app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$2'")
  check "$1: object bytes equal the stored bytes" "$(q app -c "SELECT sha256 FROM legacy_backup.snapshots WHERE id = '$2'")" "$(sha256sum "$BUCKET_DIR/$key" | cut -d' ' -f1)"
  wait_for "$1: cleanup completed" "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = '$1'" t 90
  check "$1: every object gone" 0 "$(left "$1")"
  check "$1: neighbour prefix kept" 1 "$(left "${1}x")"
  check "$1: both snapshots kept in backups/" 2 "$(find "$BUCKET_DIR/backups/$1" -type f -name 'categorization-*' | wc -l)"
  check "$1: one completion audit row" 1 "$(q app -c "SELECT count(*) FROM legacy_import_audit_logs WHERE action = 'R2_CLEANUP_COMPLETED' AND session_id = '$1'")"
}

echo "S3 stopped for 30 s during an upload and a cleanup"
session_with_backup down
objects down 12000
export_and_make_due down
wait_for "cleanup has started deleting" "SELECT count(*) > 0 FROM legacy_backup.jobs WHERE kind = 'cleanup' AND session_id = 'down' AND state = 'running' AND (progress->>'deleted')::int > 0" t 20
stop_proxy; stop_s3
t_down=$(date +%s)
id=$(q app -c "SELECT legacy_snapshot_take('down')->>'snapshotId'")
echo "  info: stopped with $(left down) of 12000 objects left"
check_nothing_marked_done down "$id" "could not connect"
left_s=$(( 30 - ($(date +%s) - t_down) )); [ "$left_s" -gt 0 ] && sleep "$left_s"
check "still nothing marked done after 30 s" "pending t" "$(q app -c "SELECT (SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id') || ' ' || (SELECT (cleaned_up_at IS NULL)::text FROM legacy_import_sessions WHERE id = 'down')" | sed 's/true/t/')"
start_s3; start_proxy
check_completed down "$id"

echo "S3 answering slower than the timeout (objects written, answers late)"
q app -c "ALTER SYSTEM SET legacy_backup.http_timeout = '2s'" -c "SELECT pg_reload_conf()" >/dev/null
session_with_backup slow
objects slow 300
fault slow 4
id=$(q app -c "SELECT legacy_snapshot_take('slow')->>'snapshotId'")
export_and_make_due slow
check_nothing_marked_done slow "$id" "timed out"
check "slow: S3 did store the object, the answer came too late" t "$( [ -f "$BUCKET_DIR/$(q app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$id'")" ] && echo t || echo f)"
fault pass
check_completed slow "$id"
q app -c "ALTER SYSTEM RESET legacy_backup.http_timeout" -c "SELECT pg_reload_conf()" >/dev/null

echo "S3 answering 500s"
session_with_backup err
objects err 300
fault error 500
id=$(q app -c "SELECT legacy_snapshot_take('err')->>'snapshotId'")
export_and_make_due err
check_nothing_marked_done err "$id" "HTTP 500"
check "err: no object deleted" 300 "$(left err)"
fault pass
check_completed err "$id"

echo "the S3 server's data folder made read-only"
session_with_backup ro
objects ro 300
mount --bind "$S3_DIR/data" "$S3_DIR/data" && mount -o remount,ro,bind "$S3_DIR/data"
CLEANUPS+=('umount "$S3_DIR/data" 2>/dev/null')
check "the folder is read-only" 1 "$(touch "$S3_DIR/data/probe" 2>&1 | grep -c 'Read-only')"
id=$(q app -c "SELECT legacy_snapshot_take('ro')->>'snapshotId'")
export_and_make_due ro
check_nothing_marked_done ro "$id" "."
check "ro: no object deleted" 300 "$(left ro)"
echo "  info: errors while read-only: $(q app -c "SELECT string_agg(DISTINCT kind || ': ' || left(last_error, 120), ' | ') FROM legacy_backup.jobs WHERE session_id = 'ro' AND state = 'retrying'")"
umount "$S3_DIR/data"
check_completed ro "$id"

echo "SIGKILL of the worker mid-cleanup"
q app -c "SELECT legacy_snapshot_take('f1')" >/dev/null
wait_for "snapshot uploaded" "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'f1' AND upload_state = 'uploaded'" 1 10
objects f1 12000
export_and_make_due f1
wait_for "cleanup has started deleting" "SELECT count(*) > 0 FROM legacy_backup.jobs WHERE kind = 'cleanup' AND state = 'running' AND (progress->>'deleted')::int > 0" t 20
kill -9 "$(worker_pid)"
remaining=$(left f1)
echo "  info: killed with $remaining of 12000 objects left"
check "killed mid-cleanup (some objects left)" t "$( [ "$remaining" -gt 0 ] && echo t || echo f)"
check "not marked cleaned up early" t "$(q app -c "SELECT cleaned_up_at IS NULL FROM legacy_import_sessions WHERE id = 'f1'" 2>/dev/null || echo t)"
wait_for "cleanup resumed and finished after the crash restart" "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'f1'" t 60
check "all 12,000 objects gone" 0 "$(left f1)"
check "neighbour kept" 1 "$(left f1x)"
check "snapshot kept" 1 "$(find "$BUCKET_DIR/backups/f1" -type f -name 'categorization-*' | wc -l)"
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
objects f2 12000
export_and_make_due f2
wait_for "cleanup has started deleting" "SELECT count(*) > 0 FROM legacy_backup.jobs WHERE kind = 'cleanup' AND session_id = 'f2' AND state = 'running' AND (progress->>'deleted')::int > 0" t 20
t0=$(date +%s%N)
runuser -u postgres -- "$BIN/pg_ctl" -D "$CLUSTER/data" -m fast -w -t 30 stop >/dev/null
stop_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "  info: fast shutdown took ${stop_ms} ms"
check "shutdown within 5 s" t "$( [ "$stop_ms" -lt 5000 ] && echo t || echo f)"
bash "$ROOT/scripts/pgcluster.sh" start "$CLUSTER" "$PORT" >/dev/null
wait_for "cleanup finished after restart" "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'f2'" t 60
check "all objects gone" 0 "$(left f2)"

echo "pruning snapshot bodies past the retention, never the newest uploaded"
q app -c "SELECT legacy_snapshot_take('f1')" >/dev/null
wait_for "second f1 snapshot uploaded" "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'f1' AND upload_state = 'uploaded'" 2 20
q app -c "UPDATE legacy_backup.snapshots SET snapshot_at = snapshot_at - interval '40 days' WHERE session_id = 'f1'"
q app -c "INSERT INTO legacy_backup.jobs (kind, requested_by) VALUES ('prune', 'test')" -c "SELECT pg_notify('x', '')" >/dev/null
wait_for "prune job done" "SELECT state FROM legacy_backup.jobs WHERE kind = 'prune' AND requested_by = 'test'" succeeded 20
check "older body pruned, newest kept" "f,t" "$(q app -c "SELECT string_agg((body IS NOT NULL)::text, ',' ORDER BY snapshot_at) FROM legacy_backup.snapshots WHERE session_id = 'f1'" | sed 's/false/f/g; s/true/t/g')"
check "metadata kept" 2 "$(q app -c "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'f1' AND sha256 IS NOT NULL")"

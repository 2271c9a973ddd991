#!/usr/bin/env bash
# Deleted sessions, with the real worker and s3s-fs:
#   d1  holds work, never exported: the delete takes a final snapshot in its own transaction,
#       the worker uploads it, and deletes the files under every cleanup prefix only once
#       cleanup_delay has passed since the delete; backups/ and neighbours stay;
#   d2  a cancelled upload (no documents, no work): no snapshot, its files deleted when due;
#   d3  exported, then deleted: keeps its (later) schedule; a partner's legacy_cleanup_session
#       previews and runs it; the jobs view shows the job;
#   d4  deleted, then created again under its id before the cleanup is due: nothing deleted;
#   d5  deleted, then its cleanup postponed by a partner: nothing deleted when first due;
#   d6  exported and cleaned up, then deleted: scheduled again from the delete.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3.sh"
start_s3
BUCKET_DIR=$S3_DIR/data/legacy-import
start_cluster_with_worker
q postgres -c "CREATE DATABASE app"
load_app app d1 300
q app -c "CREATE EXTENSION legacy_backup"
wait_for "worker running" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 15

files() { # session [prefix...]: how many files the session has under the cleanup prefixes
  local n=0 p
  for p in pst documents legacy-import; do
    [ -d "$BUCKET_DIR/$p/$1" ] && n=$((n + $(find "$BUCKET_DIR/$p/$1" -type f | wc -l)))
  done
  echo "$n"
}
put_files() { # session
  mkdir -p "$BUCKET_DIR/pst/$1" "$BUCKET_DIR/documents/$1/sub" "$BUCKET_DIR/legacy-import/$1"
  echo pst >"$BUCKET_DIR/pst/$1/archive.pst"
  for i in 1 2 3; do echo "doc $i" >"$BUCKET_DIR/documents/$1/sub/doc $i.pdf"; done
  echo imported >"$BUCKET_DIR/legacy-import/$1/doc.pdf"
}
new_session() { # id
  q app -c "INSERT INTO legacy_import_sessions (id, firm_id, pst_file_name, pst_file_size, uploaded_by, status, updated_at)
            VALUES ('$1', 'firm-1', '$1.pst', 1, 'u-partner', 'Uploading', now())"
}
delete_session() { # id delay
  q app -c "BEGIN" -c "SET LOCAL legacy_backup.cleanup_delay = '$2'" -c "SET LOCAL legacy_backup.actor = 'u-partner'" \
        -c "DELETE FROM legacy_import_sessions WHERE id = '$1'" -c "COMMIT" >/dev/null
}

echo "d1: a session with work, deleted"
put_files d1; mkdir -p "$BUCKET_DIR/documents/d1x"; echo keep >"$BUCKET_DIR/documents/d1x/neighbour.pdf"
categorized=$(q app -c "SELECT count(*) FROM extracted_documents WHERE session_id = 'd1' AND category_id IS NOT NULL")
delete_session d1 4s
deleted_at=$(date +%s%N)
check "the delete took a final snapshot with every document" "300 $categorized" \
  "$(q app -F' ' -c "SELECT (stats->>'totalDocuments'), (stats->>'categorizedCount') FROM legacy_backup.snapshots WHERE session_id = 'd1'")"
check "SESSION_DELETED names it" t \
  "$(q app -c "SELECT details->>'finalSnapshotId' = (SELECT id FROM legacy_backup.snapshots WHERE session_id = 'd1') FROM legacy_import_audit_logs WHERE session_id = 'd1' AND action = 'SESSION_DELETED'")"
check "the deletions are in the audit trail" 300 "$(q app -c "SELECT count(*) FROM category_assignment_logs WHERE session_id = 'd1' AND new_status IS NULL")"
wait_for "the final snapshot uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE session_id = 'd1'" uploaded 10
sleep 1.5
check "nothing deleted before cleanup_delay has passed" 5 "$(files d1)"
wait_for "the deleted session's cleanup recorded" "SELECT cleaned_up_at IS NOT NULL FROM legacy_backup.cleanup_schedule WHERE session_id = 'd1'" t 20
ms=$(( ($(date +%s%N) - deleted_at) / 1000000 ))
echo "  info: files deleted ${ms} ms after the delete (cleanup_delay 4 s, naptime 1 s)"
check "no earlier than cleanup_delay" 1 "$(( ms >= 4000 ))"
check "every file under the three prefixes gone" 0 "$(files d1)"
check "the neighbour documents/d1x/ kept" 1 "$(find "$BUCKET_DIR/documents/d1x" -type f | wc -l)"
check "the final snapshot kept in backups/" 1 "$(find "$BUCKET_DIR/backups/d1" -type f -name 'categorization-*' | wc -l)"
check "R2_CLEANUP_COMPLETED for a deleted session" "5 true" \
  "$(q app -F' ' -c "SELECT details->>'deleted', details->>'sessionDeleted' FROM legacy_import_audit_logs WHERE session_id = 'd1' AND action = 'R2_CLEANUP_COMPLETED'")"
check "the final snapshot fetches and verifies from R2, every document in it" "d1 300" \
  "$(q app -F' ' -c "SELECT f->>'sessionId', json_array_length(f->'documents') FROM (SELECT legacy_snapshot_fetch((SELECT snapshot_key FROM legacy_backup.snapshots WHERE session_id = 'd1')) AS f) x")"

echo "d2: a cancelled upload, no work"
new_session d2; put_files d2
delete_session d2 2s
check "no snapshot without work" 0 "$(q app -c "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 'd2'")"
wait_for "d2's files deleted when due" "SELECT cleaned_up_at IS NOT NULL FROM legacy_backup.cleanup_schedule WHERE session_id = 'd2'" t 20
check "d2: nothing left" 0 "$(files d2)"

echo "d3: exported, then deleted before its cleanup"
q app -v sid=d3 -v docs=40 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null
put_files d3
q app -c "SELECT legacy_snapshot_take('d3', 'u-partner')" >/dev/null
q app -c "BEGIN" -c "SET LOCAL legacy_backup.cleanup_delay = '1 hour'" \
      -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'd3'" -c "COMMIT" >/dev/null
exported_schedule=$(q app -c "SELECT scheduled_at FROM legacy_backup.cleanup_schedule WHERE session_id = 'd3'")
delete_session d3 1s
check "the exported session keeps its schedule" "$exported_schedule" \
  "$(q app -c "SELECT scheduled_at FROM legacy_backup.cleanup_schedule WHERE session_id = 'd3' AND deleted_at IS NOT NULL")"
wait_for "d3's final snapshot uploaded" "SELECT bool_and(upload_state = 'uploaded') FROM legacy_backup.snapshots WHERE session_id = 'd3'" t 10
sleep 3
check "not due: nothing deleted" 5 "$(files d3)"
preview=$(q app -c "SELECT legacy_cleanup_session('d3', 'u-partner')")
check "the partner's preview of a deleted session" "true 5 t" \
  "$(q app -F' ' -c "SELECT p->>'sessionDeleted', p->>'totalObjects', p->'snapshot'->>'id' = (SELECT id FROM legacy_backup.snapshots WHERE session_id = 'd3' ORDER BY snapshot_at DESC LIMIT 1) FROM (SELECT '$preview'::jsonb AS p) x")"
check "a wrong confirmation is refused" 22023 \
  "$(q app -c "DO \$\$ BEGIN PERFORM legacy_cleanup_session('d3', 'u-partner', 'd3x'); EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed -n 's/.*NOTICE: *//p')"
check "the confirmed cleanup finishes" true \
  "$(q app -c "SELECT legacy_cleanup_session('d3', 'u-partner', 'd3')->>'finished'")"
check "d3: nothing left" 0 "$(files d3)"
check "the jobs view shows the manual job" "cleanup succeeded t" \
  "$(q app -F' ' -c "SELECT kind, state, manual FROM legacy_backup_jobs WHERE session_id = 'd3' ORDER BY id DESC LIMIT 1")"
check "audited in the partner's name" "u-partner true" \
  "$(q app -F' ' -c "SELECT user_id, details->>'triggeredManually' FROM legacy_import_audit_logs WHERE session_id = 'd3' AND action = 'R2_CLEANUP_COMPLETED'")"

echo "d4: deleted, then created again under the same id"
new_session d4; put_files d4
delete_session d4 2s
new_session d4
sleep 4
check "the old schedule deletes nothing while a row of its id exists" 5 "$(files d4)"
check "no cleanup job for it" 0 "$(q app -c "SELECT count(*) FROM legacy_backup.jobs WHERE kind = 'cleanup' AND session_id = 'd4'")"

echo "d5: deleted, then postponed by a partner"
new_session d5; put_files d5
delete_session d5 2s
check "postponed" t "$(q app -c "SELECT (legacy_postpone_cleanup('d5', 'u-partner', now() + interval '1 hour')->>'cleanupScheduledAt') IS NOT NULL")"
check "a paralegal may not postpone it" 42501 \
  "$(q app -c "DO \$\$ BEGIN PERFORM legacy_postpone_cleanup('d5', 'u-paralegal', now() + interval '2 hours'); EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed -n 's/.*NOTICE: *//p')"
sleep 4
check "nothing deleted at the first due time" 5 "$(files d5)"
check "CLEANUP_POSTPONED names the deleted session" true \
  "$(q app -c "SELECT details->>'sessionDeleted' FROM legacy_import_audit_logs WHERE session_id = 'd5' AND action = 'CLEANUP_POSTPONED'")"

echo "d6: exported, cleaned up, then deleted"
q app -v sid=d6 -v docs=10 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null
q app -c "SELECT legacy_snapshot_take('d6', 'u-partner')" >/dev/null
wait_for "d6's snapshot uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE session_id = 'd6'" uploaded 10
export_and_make_due d6
wait_for "d6 cleaned up" "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'd6'" t 20
put_files d6   # put there after the cleanup
delete_session d6 '1 hour'
check "its schedule starts again from the delete, not from the spent export schedule" t \
  "$(q app -c "SELECT scheduled_at = deleted_at + interval '1 hour' AND cleaned_up_at IS NULL FROM legacy_backup.cleanup_schedule WHERE session_id = 'd6'")"
sleep 2
check "nothing deleted before then" 5 "$(files d6)"
check "no worker error in the log" 0 "$(grep -c 'legacy_backup worker.*ERROR\|ERROR.*legacy_backup worker' "$CLUSTER/server.log" || true)"
echo "t_deleted_session: all checks passed"

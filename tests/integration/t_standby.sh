#!/usr/bin/env bash
# Standby and failover (issue #21), against s3s-fs with the real worker:
# - a streaming standby (pg_basebackup -R) has no worker and no launcher;
# - on the hot standby the reading functions answer (health, readiness, history, point in time,
#   legacy_snapshot, the views) and the writing ones refuse with 25006, saying it is a standby;
# - the primary is killed (immediate stop) with an upload pending and a cleanup due; the standby
#   is promoted with the same settings; both finish there, once, with no operator action.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3.sh"
start_s3
BUCKET_DIR=$S3_DIR/data/legacy-import
start_proxy
# The worker talks to S3 through the fault proxy, so the upload can be held pending.
S3_ENDPOINT_PORT=$PROXY_PORT start_cluster_with_worker "wal_level = replica" "max_wal_senders = 4" "hot_standby = on"
q postgres -c "CREATE DATABASE app"
load_app app f1 60
q app -v sid=f2 -v docs=40 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null
q app -c "CREATE EXTENSION legacy_backup"
workers() { q postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'"; }
for _ in $(seq 1 60); do [ "$(workers)" = 1 ] && break; sleep 0.25; done
check "worker runs on the primary, as legacy_backup_worker" "1 legacy_backup_worker" \
  "$(q postgres -c "SELECT count(*), min(usename) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" | tr '|' ' ')"

# f2: snapshot uploaded, exported with its cleanup due at once (it will wait for the failover).
b=$(q app -c "SELECT legacy_snapshot_take('f2')->>'snapshotId'")
wait_for "f2's snapshot uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$b'" uploaded 15
mkdir -p "$BUCKET_DIR/pst/f2" "$BUCKET_DIR/documents/f2"
echo pst >"$BUCKET_DIR/pst/f2/archive.pst"; for i in 1 2 3; do echo d >"$BUCKET_DIR/documents/f2/$i.pdf"; done

echo "the standby"
STANDBY=$CLUSTER-standby; SPORT=$((PORT + 1))
rm -rf "$STANDBY"; mkdir -p "$STANDBY/sock"; chown -R postgres:postgres "$STANDBY"
runuser -u postgres -- "$BIN/pg_basebackup" -h "$CLUSTER/sock" -p "$PORT" -U postgres -D "$STANDBY/data" -R -X stream >/dev/null
sed -i "s#^port = .*#port = $SPORT#; s#^unix_socket_directories = .*#unix_socket_directories = '$STANDBY/sock'#" "$STANDBY/data/postgresql.conf"
runuser -u postgres -- "$BIN/pg_ctl" -D "$STANDBY/data" -l "$STANDBY/server.log" -w start >/dev/null
CLEANUPS+=('runuser -u postgres -- "$BIN/pg_ctl" -D "$STANDBY/data" -m fast -w stop >/dev/null 2>&1')
sq() { "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$STANDBY/sock" -p "$SPORT" -U postgres -d "${DB:-app}" -c "$1"; }
state_on_standby() { sq "DO \$\$ BEGIN PERFORM $1; RAISE NOTICE 'ok'; EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed -n 's/.*NOTICE: *//p'; }
check "the copy is a standby" t "$(DB=postgres sq "SELECT pg_is_in_recovery()")"
sleep 2
check "no worker and no launcher on the standby" 0 "$(DB=postgres sq "SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('legacy_backup worker', 'legacy_backup launcher')")"
check "health answers; only the sealing key is not ok (none configured)" "backup sealing key" \
  "$(sq "SELECT string_agg(check_name, ', ') FROM legacy_backup_health() WHERE NOT ok")"
check "health: the worker runs on the primary" t "$(sq "SELECT detail LIKE 'this server is a standby%' FROM legacy_backup_health() WHERE check_name = 'background worker'")"
check "readiness answers" READY "$(sq "SELECT legacy_export_readiness('f2')->>'code'")"
check "history answers" t "$(sq "SELECT count(*) > 0 FROM legacy_document_history('f1-doc-000001')")"
check "point in time answers" 60 "$(sq "SELECT count(*) FROM legacy_categorization_at('f1', now())")"
check "legacy_snapshot answers" t "$(sq "SELECT legacy_snapshot('f1')->>'sessionId' = 'f1'")"
check "the views answer" t "$(sq "SELECT (SELECT count(*) FROM legacy_snapshots) >= 1 AND (SELECT count(*) FROM legacy_backup_jobs) >= 1")"
for call in "legacy_snapshot_take('f1')" "legacy_undo_last_categorization('u-paralegal')" "legacy_export_begin('f1', 'u-partner')" \
            "legacy_postpone_cleanup('f2', 'u-partner', now() + interval '1 day')" "legacy_snapshot_verify('$b')" \
            "legacy_restore_snapshot('$b', 'u-partner', true)" "legacy_cleanup_session('f2', 'u-partner')" "legacy_backup_attach()" \
            "legacy_backup_verify_all()" "legacy_trail_rebuild('f1', 'u-partner')"; do
  check "on the standby, $call refuses with 25006" 25006 "$(state_on_standby "$call")"
done
echo "  info: $(sq "SELECT legacy_snapshot_take('f1')" 2>&1 | head -1)"

echo "the primary fails with an upload pending and a cleanup due"
fault error 503
a=$(q app -c "SELECT legacy_snapshot_take('f1')->>'snapshotId'")
export_and_make_due f2
sleep 1.5
check "f1's upload is pending on the primary" pending "$(q app -c "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$a'")"
check "f2's cleanup has not run" f "$(q app -c "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'f2'")"
lsn=$(q postgres -c "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 100); do [ "$(DB=postgres sq "SELECT pg_last_wal_replay_lsn() >= '$lsn'")" = t ] && break; sleep 0.1; done
check "the standby has replayed it all" t "$(DB=postgres sq "SELECT pg_last_wal_replay_lsn() >= '$lsn'")"
runuser -u postgres -- "$BIN/pg_ctl" -D "$CLUSTER/data" -m immediate -w stop >/dev/null
echo "  info: primary stopped (immediate)"
fault pass
runuser -u postgres -- "$BIN/pg_ctl" -D "$STANDBY/data" -w promote >/dev/null
for _ in $(seq 1 60); do [ "$(DB=postgres sq "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'")" = 1 ] && break; sleep 0.25; done
check "the worker starts once the standby is promoted" 1 "$(DB=postgres sq "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'")"
for _ in $(seq 1 120); do [ "$(sq "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$a'")" = uploaded ] && break; sleep 0.25; done
check "the pending upload finished on the promoted server" uploaded "$(sq "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$a'")"
for _ in $(seq 1 120); do [ "$(sq "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'f2'")" = t ] && break; sleep 0.25; done
check "the due cleanup finished on the promoted server" t "$(sq "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 'f2'")"
check "f2's files are gone" 0 "$(find "$BUCKET_DIR/pst/f2" "$BUCKET_DIR/documents/f2" -type f | wc -l)"
check "each done once: one SNAPSHOT_UPLOADED for the snapshot, one R2_CLEANUP_COMPLETED for f2" "1 1" \
  "$(sq "SELECT (SELECT count(*) FROM legacy_import_audit_logs WHERE action = 'SNAPSHOT_UPLOADED' AND details->>'snapshotId' = '$a'),
                (SELECT count(*) FROM legacy_import_audit_logs WHERE action = 'R2_CLEANUP_COMPLETED' AND session_id = 'f2')" | tr '|' ' ')"
check "the uploaded object is the snapshot" "$(sq "SELECT sha256 FROM legacy_backup.snapshots WHERE id = '$a'")" \
  "$(sha256sum "$BUCKET_DIR/$(sq "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$a'")" | cut -d' ' -f1)"
check "writers work again on the promoted server" t "$(sq "SELECT legacy_snapshot_take('f1') IS NOT NULL")"
check "no worker ERROR in the standby's log before promotion" 0 "$(sed -n '1,/promot/p' "$STANDBY/server.log" | grep -c 'legacy_backup.*ERROR\|ERROR.*legacy_backup' || true)"
echo "t_standby: all checks passed"

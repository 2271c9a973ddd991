#!/usr/bin/env bash
# The worker runs only on a primary: a streaming standby made from it has no worker (it would
# start only once recovery ends, i.e. on promotion).
source "$(dirname "$0")/lib.sh"
start_cluster "wal_level = replica" "max_wal_senders = 4"
q postgres -c "CREATE EXTENSION legacy_backup" >/dev/null 2>&1 || true
# The launcher starts the worker within 5 s of CREATE EXTENSION creating its role.
workers() { q postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'"; }
for _ in $(seq 1 60); do [ "$(workers)" = 1 ] && break; sleep 0.25; done
check "worker runs on the primary, as legacy_backup_worker" "1 legacy_backup_worker" \
  "$(q postgres -c "SELECT count(*), min(usename) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" | tr '|' ' ')"
STANDBY=$CLUSTER-standby; SPORT=$((PORT + 1))
rm -rf "$STANDBY"; mkdir -p "$STANDBY/sock"; chown -R postgres:postgres "$STANDBY"
runuser -u postgres -- "$BIN/pg_basebackup" -h "$CLUSTER/sock" -p "$PORT" -U postgres -D "$STANDBY/data" -R -X stream >/dev/null
sed -i "s#^port = .*#port = $SPORT#; s#^unix_socket_directories = .*#unix_socket_directories = '$STANDBY/sock'#" "$STANDBY/data/postgresql.conf"
runuser -u postgres -- "$BIN/pg_ctl" -D "$STANDBY/data" -l "$STANDBY/server.log" -w start >/dev/null
CLEANUPS+=('runuser -u postgres -- "$BIN/pg_ctl" -D "$STANDBY/data" -m fast -w stop >/dev/null 2>&1')
sq() { "$BIN/psql" -X -At -h "$STANDBY/sock" -p "$SPORT" -U postgres -d postgres -c "$1"; }
check "the copy is a standby" t "$(sq "SELECT pg_is_in_recovery()")"
sleep 2
check "no worker and no launcher on the standby" 0 "$(sq "SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('legacy_backup worker', 'legacy_backup launcher')")"
runuser -u postgres -- "$BIN/pg_ctl" -D "$STANDBY/data" -w promote >/dev/null
for _ in $(seq 1 60); do [ "$(sq "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'")" = 1 ] && break; sleep 0.25; done
check "the worker starts once the standby is promoted" 1 "$(sq "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'")"

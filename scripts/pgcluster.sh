#!/usr/bin/env bash
# A private PostgreSQL cluster (PG=15, 16, 17 or 18: scripts/pg.sh) for the demo, regress, integration tests and benches.
# Runs as the postgres OS user (initdb refuses root), on a private socket directory and port,
# listening on 127.0.0.1 only, with legacy_backup preloaded.
#   scripts/pgcluster.sh start DIR PORT [extra postgresql.conf lines...]
#   scripts/pgcluster.sh stop DIR
#   scripts/pgcluster.sh psql DIR PORT [psql args...]
#   scripts/pgcluster.sh prepare-dir DIR      (a directory the postgres user owns and can reach)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/pg.sh"
as_pg() { runuser -u postgres -- "$@"; }

prepare_dir() {
  mkdir -p "$1"
  chown postgres:postgres "$1"
  # The postgres user must be able to reach the directory through its parents.
  local d; d=$(dirname "$1"); while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
}

cmd=${1:?usage: pgcluster.sh start|stop|psql|prepare-dir DIR [PORT]}
dir=$(realpath -m "${2:?cluster directory}")
case "$cmd" in
  prepare-dir)
    prepare_dir "$dir"
    ;;
  start)
    port=${3:?port}; shift 3
    prepare_dir "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log"; exit 1; }
      mkdir -p "$dir/sock"; chown postgres:postgres "$dir/sock"
      cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/sock'
shared_preload_libraries = 'legacy_backup'
fsync = off
max_connections = 40
log_min_messages = warning
CONF
      for line in "$@"; do echo "$line" >>"$dir/data/postgresql.conf"; done
    fi
    if as_pg "$BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      echo "cluster $dir already running"
    else
      as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { tail -30 "$dir/server.log"; exit 1; }
    fi
    ;;
  stop)
    if [ -f "$dir/data/PG_VERSION" ]; then
      as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  psql)
    port=${3:?port}; shift 3
    exec "$BIN/psql" -X -h "$dir/sock" -p "$port" -U postgres "$@"
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A 200,000-document session: snapshot built, stored and hashed; backend peak memory reported.
source "$(dirname "$0")/lib.sh"
start_cluster
q postgres -c "CREATE DATABASE big"
load_app big big-s1 200000
q big -c "CREATE EXTENSION legacy_backup"
# One session: take the snapshot, then read the backend's own peak resident memory.
out=$(q big <<'SQL'
SELECT substring(pg_read_file('/proc/' || pg_backend_pid() || '/status') from 'VmHWM:\s+(\d+) kB');
SELECT (legacy_snapshot_take('big-s1')->'stats'->>'total');
SELECT substring(pg_read_file('/proc/' || pg_backend_pid() || '/status') from 'VmHWM:\s+(\d+) kB');
SQL
)
check "all documents in the stored snapshot" 200000 "$(echo "$out" | sed -n 2p)"
echo "  info: backend peak RSS $(( $(echo "$out" | sed -n 1p) / 1024 )) MB before, $(( $(echo "$out" | sed -n 3p) / 1024 )) MB after the 200,000-document snapshot"
check "stored body parses and counts 200000 documents" 200000 \
  "$(q big -c "SELECT json_array_length(convert_from(body, 'UTF8')::json->'documents') FROM legacy_backup.snapshots")"
check "hash matches stored body" t "$(q big -c "SELECT sha256 = encode(sha256(body), 'hex') FROM legacy_backup.snapshots")"
echo "  info: snapshot of 200,000 documents: $(q big -c "SELECT pg_size_pretty(bytes) || ' JSON, ' || pg_size_pretty(pg_column_size(body)::bigint) || ' stored' FROM legacy_backup.snapshots")"

# s3s-fs, the local S3 server that verifies signatures, on 127.0.0.1 with a test key pair.
# Sourced after lib.sh; start_s3 registers its own cleanup.
S3_ACCESS_KEY=lbtestaccess
S3_SECRET_KEY=lbtestsecret-do-not-use-elsewhere
# Below Linux's ephemeral range (32768-60999): a port there can be held, in TIME_WAIT, by one of
# the many client connections a test makes, and s3s-fs does not set SO_REUSEADDR.
S3_PORT=${S3_PORT:-$((21000 + RANDOM % 500))}
S3_DIR=$ROOT/.tmp/integration/${TEST_NAME}-s3
rm -rf "$S3_DIR"

# Waits up to 5 s for something to listen on 127.0.0.1:PORT, else shows its log and fails.
wait_listening() { # port what log
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not start:"; cat "$3"; exit 1
}

start_s3() {
  # Keeps the data folder when restarted within a test (the "server down" cases).
  mkdir -p "$S3_DIR/data/legacy-import"
  command -v s3s-fs >/dev/null || { echo "s3s-fs missing: run scripts/setup.sh"; exit 1; }
  RUST_LOG=warn s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_ACCESS_KEY" \
    --secret-key "$S3_SECRET_KEY" "$S3_DIR/data" >"$S3_DIR/s3s.log" 2>&1 &
  S3_PID=$!
  CLEANUPS+=('kill "$S3_PID" 2>/dev/null')
  wait_listening "$S3_PORT" s3s-fs "$S3_DIR/s3s.log"
}

# The secret goes in a credentials file (0600, readable by the server's user), as docs/operations.md
# recommends: PostgreSQL logs a setting's new value when a reload changes it.
CREDENTIALS=$ROOT/.tmp/integration/$TEST_NAME-r2.env
# With SEALING_KEY set (64 hex digits), backups are sealed with it (LEGACY_BACKUP_KEY).
write_credentials() { # secret
  printf 'R2_ACCESS_KEY_ID=%s\nR2_SECRET_ACCESS_KEY=%s\n' "$S3_ACCESS_KEY" "$1" >"$CREDENTIALS"
  [ -z "${SEALING_KEY:-}" ] || printf 'LEGACY_BACKUP_KEY=%s\n' "$SEALING_KEY" >>"$CREDENTIALS"
  chown postgres "$CREDENTIALS"; chmod 600 "$CREDENTIALS"
}

# A cluster whose worker serves database app and talks to this s3s-fs.
start_cluster_with_worker() { # extra postgresql.conf lines...
  write_credentials "$S3_SECRET_KEY"
  start_cluster "legacy_backup.database = 'app'" "legacy_backup.naptime = '1s'" \
    "legacy_backup.r2_endpoint = 'http://127.0.0.1:${S3_ENDPOINT_PORT:-$S3_PORT}'" "legacy_backup.r2_credentials_file = '$CREDENTIALS'" "$@"
}

stop_s3() { kill "$S3_PID" 2>/dev/null; wait "$S3_PID" 2>/dev/null || true; }

# The fault proxy (faultproxy.py) in front of s3s-fs; the worker then talks to PROXY_PORT and
# `fault pass|slow SECONDS|error STATUS` changes how S3 answers from the next request on.
PROXY_PORT=$((S3_PORT + 500))
start_proxy() {
  python3 "$ROOT/tests/integration/faultproxy.py" "$PROXY_PORT" "$S3_PORT" "$S3_DIR/fault" >>"$S3_DIR/proxy.log" 2>&1 &
  PROXY_PID=$!
  CLEANUPS+=('kill "$PROXY_PID" 2>/dev/null')
  wait_listening "$PROXY_PORT" "the fault proxy" "$S3_DIR/proxy.log"
}
stop_proxy() { kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null || true; }
fault() { echo "$*" >"$S3_DIR/fault"; }

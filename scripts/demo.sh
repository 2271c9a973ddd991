#!/usr/bin/env bash
# The demo: a local PostgreSQL 15 cluster with legacy_backup preloaded, the application's schema
# with a realistic import session (8,000 documents, 40 categories, 24 monthly batches, partly
# categorized), and the extension at work from psql. Idempotent: re-running rebuilds the demo
# database. The cluster stays up afterwards for exploring (the command is printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
DIR=.tmp/demo; PORT=${DEMO_PORT:-54350}; S3_PORT=${DEMO_S3_PORT:-54360}
S3_DIR=$PWD/.tmp/demo-s3

bash scripts/setup.sh
bash scripts/install.sh

# s3s-fs stands in for R2 (it verifies signatures like R2 does). Fresh data each run.
if [ -f "$S3_DIR/pid" ]; then kill "$(cat "$S3_DIR/pid")" 2>/dev/null || true; sleep 0.2; fi
rm -rf "$S3_DIR"; mkdir -p "$S3_DIR/data/legacy-import"
nohup s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key demo-access --secret-key demo-secret-key \
  "$S3_DIR/data" >"$S3_DIR/s3s.log" 2>&1 &
echo $! >"$S3_DIR/pid"
# Backups sealed with a key of the demo's own (docs/operations.md, Sealed backups).
printf 'R2_ACCESS_KEY_ID=demo-access\nR2_SECRET_ACCESS_KEY=demo-secret-key\nLEGACY_BACKUP_KEY=%s\n' \
  "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$S3_DIR/r2.env"
chown postgres "$S3_DIR/r2.env"; chmod 600 "$S3_DIR/r2.env"
# A few files of the session in "R2", as the application's import left them.
mkdir -p "$S3_DIR/data/legacy-import/pst/demo-session" "$S3_DIR/data/legacy-import/documents/demo-session/Inbox"
echo "pst" >"$S3_DIR/data/legacy-import/pst/demo-session/archive.pst"
for i in $(seq 1 250); do echo "attachment $i" >"$S3_DIR/data/legacy-import/documents/demo-session/Inbox/attachment $i.pdf"; done

# Restart so the postmaster preloads the freshly installed library.
bash scripts/pgcluster.sh stop "$DIR"
rm -rf "$DIR"
bash scripts/pgcluster.sh start "$DIR" "$PORT" "legacy_backup.database = 'legacy_demo'" \
  "legacy_backup.naptime = '1s'" "legacy_backup.r2_endpoint = 'http://127.0.0.1:$S3_PORT'" \
  "legacy_backup.r2_credentials_file = '$S3_DIR/r2.env'"
P() { bash scripts/pgcluster.sh psql "$DIR" "$PORT" -v ON_ERROR_STOP=1 "$@"; }
P -q -c "CREATE DATABASE legacy_demo"
echo "Loading the application's schema and one import session of 8,000 documents..."
P -q -d legacy_demo -f tests/fixtures/app_schema.sql
P -q -d legacy_demo -v sid=demo-session -v docs=8000 -v cats=40 -v months=24 -f tests/fixtures/seed.sql
# The application's write paths (categorize, skip, merge), as the demo replays them.
P -q -d legacy_demo -f tests/fixtures/app_workload.sql
# The launcher connects once legacy_demo exists (it retries every 5 s) and starts the worker, as
# legacy_backup_worker, within a second of CREATE EXTENSION (the first step of demo.sql)
# creating that role.
P -d legacy_demo -f scripts/demo.sql
echo
echo "The demo cluster is still running. Explore it with:"
echo "  bash scripts/pgcluster.sh psql $DIR $PORT -d legacy_demo"
echo "Stop it with: bash scripts/pgcluster.sh stop $DIR; kill \$(cat $S3_DIR/pid)"

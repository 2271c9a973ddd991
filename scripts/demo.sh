#!/usr/bin/env bash
# The demo: a local PostgreSQL 15 cluster with legacy_backup preloaded, the application's schema
# with a realistic import session (8,000 documents, 40 categories, 24 monthly batches, partly
# categorized), and the extension at work from psql. Idempotent: re-running rebuilds the demo
# database. The cluster stays up afterwards for exploring (the command is printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
DIR=.tmp/demo; PORT=${DEMO_PORT:-54350}

bash scripts/setup.sh
bash scripts/install.sh
# Restart so the postmaster preloads the freshly installed library.
bash scripts/pgcluster.sh stop "$DIR"
bash scripts/pgcluster.sh start "$DIR" "$PORT"
P() { bash scripts/pgcluster.sh psql "$DIR" "$PORT" -v ON_ERROR_STOP=1 "$@"; }
P -q -c "DROP DATABASE IF EXISTS legacy_demo" -c "CREATE DATABASE legacy_demo"
echo "Loading the application's schema and one import session of 8,000 documents..."
P -q -d legacy_demo -f tests/fixtures/app_schema.sql
P -q -d legacy_demo -v sid=demo-session -v docs=8000 -v cats=40 -v months=24 -f tests/fixtures/seed.sql
# The application's write paths (categorize, skip, merge), as the demo replays them.
P -q -d legacy_demo -f tests/fixtures/app_workload.sql
P -d legacy_demo -f scripts/demo.sql
echo
echo "The demo cluster is still running. Explore it with:"
echo "  bash scripts/pgcluster.sh psql $DIR $PORT -d legacy_demo"
echo "Stop it with: bash scripts/pgcluster.sh stop $DIR"

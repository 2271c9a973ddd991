#!/usr/bin/env bash
# Builds and installs the extension (release profile) into the PostgreSQL that PG selects
# (scripts/pg.sh: 15, 16, 17 or 18); cargo-pgrx picks the matching pgXX feature from its pg_config.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
mkdir -p .tmp
if ! cargo pgrx install --release --pg-config "$PG_CONFIG" >.tmp/install.log 2>&1; then
  cat .tmp/install.log; exit 1
fi
grep -E 'Finished|Writing' .tmp/install.log | sed 's/\x1b\[[0-9;]*m//g'

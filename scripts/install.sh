#!/usr/bin/env bash
# Builds and installs the extension into the system PostgreSQL 15 (release profile).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tmp
if ! cargo pgrx install --release --pg-config "$(command -v pg_config)" >.tmp/install.log 2>&1; then
  cat .tmp/install.log; exit 1
fi
grep -E 'Finished|Writing' .tmp/install.log | sed 's/\x1b\[[0-9;]*m//g'

#!/usr/bin/env bash
# psql-facing regression suite: installs the extension, starts a fresh private cluster with it
# preloaded, and runs pg_regress over tests/pg_regress/sql/*.sql against tests/pg_regress/expected.
# (`cargo pgrx regress` does not work as root, hence this script.)
# Usage: scripts/installcheck.sh [test ...]   e.g. `scripts/installcheck.sh 10_trail`: runs
# 01_install (which creates the extension and the regress.* helpers every file uses) and the
# named files only. REGRESS_PORT and REGRESS_DIR let two runs share the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
ROOT=$PWD
DIR=${REGRESS_DIR:-$ROOT/.tmp/regress-pg$PG}
PORT=${REGRESS_PORT:-54331}
PG_REGRESS="$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress"

[ "${SKIP_INSTALL:-}" = 1 ] || bash scripts/install.sh
# An unrelated extension the suite drops beside legacy_backup (the wheels ship no contrib).
install -m 644 tests/pg_regress/extension/* "$("$PG_CONFIG" --sharedir)/extension/"
bash scripts/pgcluster.sh stop "$DIR"
rm -rf "$DIR"
bash scripts/pgcluster.sh start "$DIR" "$PORT"
trap 'bash scripts/pgcluster.sh stop "$DIR"' EXIT

if [ $# -gt 0 ]; then
  tests="01_install $(printf '%s\n' "$@" | sed 's/\.sql$//' | grep -vx 01_install | tr '\n' ' ')"
else
  tests=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
fi
mkdir -p "$DIR/out"
chown -R postgres:postgres "$DIR/out"
set +e
# The fixtures are included by relative path (tests/fixtures/...), so run from the repo root.
runuser -u postgres -- "$PG_REGRESS" \
  --bindir="$BIN" \
  --host="$DIR/sock" --port="$PORT" --user=postgres \
  --inputdir="$ROOT/tests/pg_regress" --outputdir="$DIR/out" \
  --dbname=legacy_regress \
  $tests
status=$?
set -e
if [ $status -ne 0 ] && [ -f "$DIR/out/regression.diffs" ]; then
  head -200 "$DIR/out/regression.diffs"
fi
exit $status

#!/usr/bin/env bash
# psql-facing regression suite: installs the extension, starts a fresh private cluster with it
# preloaded, and runs pg_regress over tests/pg_regress/sql/*.sql against tests/pg_regress/expected.
# (`cargo pgrx regress` does not work as root, hence this script.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/.tmp/regress
PORT=${REGRESS_PORT:-54331}
PG_REGRESS="$(dirname "$(pg_config --pgxs)")/../test/regress/pg_regress"

[ "${SKIP_INSTALL:-}" = 1 ] || bash scripts/install.sh
bash scripts/pgcluster.sh stop "$DIR"
rm -rf "$DIR"
bash scripts/pgcluster.sh start "$DIR" "$PORT"
trap 'bash scripts/pgcluster.sh stop "$DIR"' EXIT

tests=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
mkdir -p "$DIR/out"
chown -R postgres:postgres "$DIR/out"
set +e
# The fixtures are included by relative path (tests/fixtures/...), so run from the repo root.
runuser -u postgres -- "$PG_REGRESS" \
  --bindir="$(pg_config --bindir)" \
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

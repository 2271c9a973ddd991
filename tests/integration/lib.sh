# Shared helpers for integration tests: a real cluster (legacy_backup preloaded) per test file.
# Sourced by tests/integration/t_*.sh; each test file exits non-zero on the first failed check.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TEST_NAME=$(basename "$0" .sh)
CLUSTER=$ROOT/.tmp/integration/$TEST_NAME
PORT=${PORT:-$((54400 + RANDOM % 200))}
source "$ROOT/scripts/pg.sh"

# Cleanups run at exit, whatever started them (cluster, S3 server).
CLEANUPS=()
on_exit() { local c; for c in "${CLEANUPS[@]}"; do eval "$c" || true; done; }
trap on_exit EXIT

start_cluster() {
  bash "$ROOT/scripts/pgcluster.sh" stop "$CLUSTER"
  rm -rf "$CLUSTER"
  bash "$ROOT/scripts/pgcluster.sh" start "$CLUSTER" "$PORT" "$@"
  CLEANUPS+=('bash "$ROOT/scripts/pgcluster.sh" stop "$CLUSTER"')
}

# psql against database $1, quiet, tuples only, stop on error.
q() {
  local db=$1; shift
  "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CLUSTER/sock" -p "$PORT" -U postgres -d "$db" "$@"
}

# Loads the application's schema and one seeded session into database $1.
load_app() {
  local db=$1 sid=$2 docs=$3
  q "$db" -f "$ROOT/tests/fixtures/app_schema.sql"
  q "$db" -v sid="$sid" -v docs="$docs" -f "$ROOT/tests/fixtures/seed.sql"
}

# Exports session $1 in database app with its cleanup due at once: a superuser exports with
# legacy_backup.cleanup_delay = 0 (the schedule is the extension's; nobody can move it earlier).
export_and_make_due() { # sid
  q app -c "BEGIN" -c "SET LOCAL legacy_backup.cleanup_delay = '0'" \
         -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = '$1'" -c "COMMIT" >/dev/null
}

# Makes the cleanup of the already exported session $1 due now: re-opened and exported again in
# one transaction with cleanup_delay 0 (its snapshot must still be fresh).
make_due() { # sid
  q app -c "BEGIN" -c "SET LOCAL legacy_backup.cleanup_delay = '0'" \
         -c "UPDATE legacy_import_sessions SET status = 'Completed', updated_at = now() WHERE id = '$1'" \
         -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = '$1'" -c "COMMIT" >/dev/null
}

# Polls `sql` in database app until it returns `expected`, for at most `seconds`.
wait_for() { # what sql expected seconds
  local deadline=$(( $(date +%s%N) + $4 * 1000000000 )) got
  while :; do
    got=$(q app -c "$2" 2>/dev/null || true)
    [ "$got" = "$3" ] && { echo "  ok: $1"; return 0; }
    if [ "$(date +%s%N)" -gt "$deadline" ]; then
      echo "  FAILED: $1: waited $4 s for [$3], last [$got]"
      q app -c "SELECT id, kind, state, attempts, last_error, progress FROM legacy_backup.jobs ORDER BY id" 2>/dev/null || true
      exit 1
    fi
    sleep 0.05
  done
}

check() {
  local what=$1 expected=$2 actual=$3
  if [ "$expected" = "$actual" ]; then
    echo "  ok: $what"
  else
    echo "  FAILED: $what: expected [$expected], got [$actual]"
    exit 1
  fi
}

# Shared by the bench scripts, sourced from the repository root once DIR and PORT are set.
# fresh_bench_cluster [postgresql.conf lines...]: installs (unless SKIP_INSTALL=1), starts a fresh
# private cluster that stops when the script exits, and creates database "bench" with the
# application's schema. P runs psql against that cluster. PG=16, 17 or 18 benches that major.
source scripts/pg.sh
P() { PGOPTIONS="-c client_min_messages=warning" bash scripts/pgcluster.sh psql "$DIR" "$PORT" -q -v ON_ERROR_STOP=1 "$@"; }

fresh_bench_cluster() {
  [ "${SKIP_INSTALL:-}" = 1 ] || bash scripts/install.sh >/dev/null
  bash scripts/pgcluster.sh stop "$DIR"; rm -rf "$DIR"
  bash scripts/pgcluster.sh start "$DIR" "$PORT" "$@"
  trap 'bash scripts/pgcluster.sh stop "$DIR"' EXIT
  P -c "CREATE DATABASE bench"
  P -d bench -f tests/fixtures/app_schema.sql
}

# What every bench report starts with.
machine() { echo "$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $("$PG_CONFIG" --version), $(date -u +%F)"; }

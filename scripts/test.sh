#!/usr/bin/env bash
# The whole test suite, all three levels. Sets up the machine first (idempotent).
#   1. cargo test            pure Rust (ids, snapshot format)
#   2. cargo pgrx test       #[pg_test] in a temporary cluster, as the postgres user
#   3. installcheck          pg_regress .sql/.out suite against a real cluster
#   4. integration           real clusters across processes (pg_dump/restore, 200k documents)
# Order matters: `cargo pgrx test` installs its debug test build into the system PostgreSQL,
# so the release build is installed after it, before the suites that use it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh

step() { printf '\n=== %s\n' "$*"; }
step "1/4 cargo test (pure Rust)"
cargo test --lib

step "2/4 cargo pgrx test (in-database)"
bash scripts/pgcluster.sh prepare-dir .tmp
cargo pgrx test pg15 --runas postgres --pgdata "$PWD/.tmp/pgtest"

step "3/4 pg_regress suite"
bash scripts/installcheck.sh

step "4/4 integration tests"
SKIP_INSTALL=1 bash tests/integration/run.sh

step "all test levels passed"

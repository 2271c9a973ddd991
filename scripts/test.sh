#!/usr/bin/env bash
# The whole test suite, all levels. Sets up the machine first (idempotent).
#   0. gates                 cargo fmt --check, cargo clippy -D warnings (pg15, pg_test)
#   1. cargo test            pure Rust (ids, snapshot format, storage client, settings)
#   2. cargo pgrx test       #[pg_test] in a temporary cluster, as the postgres user
#   3. installcheck          pg_regress .sql/.out suite against a real cluster
#   4. security              the red-team suite (tests/security/run.sh, docs/security.md)
#   5. integration           real clusters across processes (worker, faults, dump/restore, upgrade)
# Order matters: `cargo pgrx test` installs its debug test build into the system PostgreSQL,
# so the release build is installed after it, before the suites that use it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh

step() { printf '\n=== %s\n' "$*"; }
step "0/5 gates: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --check
cargo clippy --all-targets --features "pg15 pg_test" -- -D warnings

step "1/5 cargo test (pure Rust)"
cargo test --lib

step "2/5 cargo pgrx test (in-database)"
bash scripts/pgcluster.sh prepare-dir .tmp
cargo pgrx test pg15 --runas postgres --pgdata "$PWD/.tmp/pgtest"

step "3/5 pg_regress suite"
bash scripts/installcheck.sh

step "4/5 red-team suite"
bash tests/security/run.sh

step "5/5 integration tests"
SKIP_INSTALL=1 bash tests/integration/run.sh

step "all test levels passed"

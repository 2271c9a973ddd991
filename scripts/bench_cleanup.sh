#!/usr/bin/env bash
# Object-storage benches against s3s-fs (which verifies signatures), in one run:
#  1. deleting N objects under a prefix: batched DeleteObjects vs list + one DELETE per key,
#     interleaved, with request counts and wall time;
#  2. snapshot commit-to-uploaded latency through the real worker, over M snapshots.
# Usage: scripts/bench_cleanup.sh [objects=10000] [rounds=3] [snapshots=20]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}; ROUNDS=${2:-3}; SNAPS=${3:-20}
export PATH="$HOME/.cargo/bin:$PATH"
TEST_NAME=bench-cleanup
source tests/integration/lib.sh
source tests/integration/s3.sh
[ "${SKIP_INSTALL:-}" = 1 ] || bash scripts/install.sh >/dev/null
cargo build -q --release --example bench_cleanup
start_s3
BUCKET_DIR=$S3_DIR/data/legacy-import
export LB_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" LB_S3_BUCKET=legacy-import LB_S3_ACCESS_KEY="$S3_ACCESS_KEY" LB_S3_SECRET_KEY="$S3_SECRET_KEY"
fill() { mkdir -p "$BUCKET_DIR/documents/bench"; for i in $(seq 1 "$N"); do : >"$BUCKET_DIR/documents/bench/$i.pdf"; done; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, s3s-fs $(s3s-fs --version 2>/dev/null | awk '{print $2}'), $(date -u +%F)"
results=$(mktemp)
for round in $(seq 1 "$ROUNDS"); do
  for mode in batched per-key; do
    [ $((round % 2)) -eq 0 ] && [ "$mode" = batched ] && continue  # alternate the order below
    fill; echo "$mode $(target/release/examples/bench_cleanup "$mode" documents/bench/)" >>"$results"
  done
  if [ $((round % 2)) -eq 0 ]; then fill; echo "batched $(target/release/examples/bench_cleanup batched documents/bench/)" >>"$results"; fi
done
echo
echo "Deleting $N objects (per run: requests, ms, deleted):"
sort "$results" | awk '{printf "  %-8s requests=%-6s ms=%-9s deleted=%s\n", $1, $2, $3, $4}'
python3 - "$results" "$N" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
n = int(sys.argv[2])
def med(mode, col): return statistics.median(float(r[col]) for r in rows if r[0] == mode)
b_req, p_req = med("batched", 1), med("per-key", 1)
b_ms, p_ms = med("batched", 2), med("per-key", 2)
print(f"median requests: batched {b_req:.0f} (2*N/1000 = {2*n/1000:.0f}), per-key {p_req:.0f}")
print(f"median wall time: batched {b_ms:.1f} ms, per-key {p_ms:.1f} ms, ratio per-key/batched {p_ms/b_ms:.1f}x")
PY

echo
echo "Snapshot commit-to-uploaded latency through the worker ($SNAPS snapshots, naptime 10s):"
start_cluster_with_worker
q postgres -c "CREATE DATABASE app"
load_app app lat 8000
q app -c "CREATE EXTENSION legacy_backup"
until [ "$(q app -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'")" = 1 ]; do sleep 0.5; done
for i in $(seq 1 "$SNAPS"); do
  id=$(q app -c "SELECT legacy_snapshot_take('lat')->>'snapshotId'")
  until [ "$(q app -c "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id'")" = uploaded ]; do sleep 0.01; done
  sleep 1.1  # one write per second per key prefix, as R2 asks
done
q app -c "SELECT format('  snapshots=%s  median=%s ms  max=%s ms  snapshot size=%s', count(*), round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1), round(max(ms)::numeric, 1), pg_size_pretty(avg(bytes)::bigint)) FROM (SELECT bytes, 1000 * extract(epoch FROM uploaded_at - snapshot_at) AS ms FROM legacy_backup.snapshots WHERE session_id = 'lat') x"
echo "  (polling alone would wait up to legacy_backup.naptime = 10 s; the commit-time wake is what the figures show)"

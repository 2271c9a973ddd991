#!/usr/bin/env bash
# Sealing cost per snapshot beside the take and the upload, in one run, for sessions of 8,000,
# 30,000 and 100,000 documents (tests/fixtures/seed.sql, one cluster, s3s-fs with signature
# checking on, the real worker):
#  1. take: legacy_snapshot_take(sid), timed server-side (clock_timestamp() around the call in a
#     plpgsql function; its commit, a few ms, is not included);
#  2. upload: commit-to-uploaded through the real worker, i.e. uploaded_at minus the end of the
#     take. Split into the wake (commit to the job's claim) and the worker's job (claim to the
#     upload recorded: read the body, seal, PUT write-once, HEAD). Each round uploads every size
#     once with LEGACY_BACKUP_KEY set (sealed, the 0.6.0 path) and once without (plain); the two
#     phases alternate their order by round and the sizes rotate within a phase. A snapshot
#     counts as sealed or plain by what the worker recorded (sealed_key_id);
#  3. seal / open: examples/bench_seal.rs calls the crate's storage::seal::seal and ::open on the
#     newest uploaded body of each size, written out of the cluster (legacy_backup.snapshots.body,
#     its sha256 checked against the recorded one), with sha256 and the bare cipher for reference.
# Reports medians and seal / (take + sealed upload). Asserts nothing about time.
#
# The worker keeps the default naptime (10 s; uploads are woken at commit) and the rounds start
# once it has shipped the audit trail that CREATE EXTENSION writes (one log row per document,
# 138,000 here, 20,000 per cycle). Snapshots are 1 s apart so the worker's cycle after an upload
# (its trail cut, 0.3-0.5 s at this size) does not overlap the next take.
# Usage: scripts/bench_seal.sh [rounds=15] [seal_rounds=31]   (PG=16, 17 or 18 for another major;
# SKIP_INSTALL=1 when the current build is already installed). About 4 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-15}; SEAL_ROUNDS=${2:-31}
SIZES=(8000 30000 100000)
export PATH="$HOME/.cargo/bin:$PATH"
source tests/integration/lib.sh
source tests/integration/s3.sh
[ "${SKIP_INSTALL:-}" = 1 ] || bash scripts/install.sh >/dev/null
cargo build -q --release --example bench_seal
begun=$(date +%s)
elapsed() { echo "$(( $(date +%s) - begun )) s"; }
start_s3
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
key_on() { write_credentials "$S3_SECRET_KEY"; printf 'LEGACY_BACKUP_KEY=%s\n' "$KEY" >>"$CREDENTIALS"; }
key_off() { write_credentials "$S3_SECRET_KEY"; }
reload() { q postgres -c "SELECT pg_reload_conf()" >/dev/null; sleep 1; }
start_cluster_with_worker "shared_buffers = 1GB" "work_mem = 64MB" "legacy_backup.scrub_interval = '1h'" \
  "legacy_backup.naptime = '10s'"
key_on
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $("$PG_CONFIG" --version), s3s-fs $(s3s-fs --version 2>/dev/null | awk '{print $2}'), $(date -u +%F)"
q postgres -c "CREATE DATABASE app"
q app -f tests/fixtures/app_schema.sql
for n in "${SIZES[@]}"; do
  t0=$(date +%s%N)
  q app -v sid="s$n" -v docs="$n" -f tests/fixtures/seed.sql >/dev/null
  echo "seeded s$n ($n documents) in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done
q app -c "CREATE EXTENSION legacy_backup" -c "VACUUM ANALYZE"
wait_for "worker running" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 30
wait_for "the audit trail CREATE EXTENSION wrote is shipped ($(q app -c "SELECT count(*) FROM category_assignment_logs") rows)" \
  "SELECT NOT EXISTS (SELECT 1 FROM category_assignment_logs l, legacy_backup.trail_cursor c WHERE l.id > c.floor
                        AND NOT EXISTS (SELECT 1 FROM legacy_backup.trail_shipped s WHERE s.log_id = l.id))
      AND NOT EXISTS (SELECT 1 FROM legacy_backup.trail_segments WHERE upload_state = 'pending')" t 180
echo "ready after $(elapsed)"
q app <<'SQL'
CREATE FUNCTION bench_take(sid text, OUT id text, OUT take_ms float8, OUT done_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
  id := legacy_snapshot_take(sid)->>'snapshotId';
  done_at := clock_timestamp();
  take_ms := 1000 * extract(epoch FROM done_at - t0);
END $$;
-- Waits in one backend (each statement sees what committed since), so no client polls.
CREATE FUNCTION bench_wait_uploaded(snap text, timeout_s float8) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; deadline timestamptz := clock_timestamp() + make_interval(secs => timeout_s);
BEGIN
  LOOP
    SELECT upload_state INTO st FROM legacy_backup.snapshots WHERE id = snap;
    EXIT WHEN st <> 'pending' OR clock_timestamp() > deadline;
    PERFORM pg_sleep(0.005);
  END LOOP;
  RETURN st;
END $$;
SQL

results=$CLUSTER/runs.txt; : >"$results"
# One line per snapshot: variant size take_ms upload_ms job_ms bytes object_bytes key_id state id
# commit_ms wake_ms
take_and_upload() { # variant size
  q app -F' ' <<SQL >>"$results"
SELECT id, done_at, take_ms FROM bench_take('s$2') \gset
SELECT clock_timestamp() AS committed_at \gset
SELECT bench_wait_uploaded(:'id', 120) AS state \gset
SELECT '$1', $2, round(:'take_ms'::numeric, 3),
       round(1000 * extract(epoch FROM s.uploaded_at - :'done_at'::timestamptz), 3),
       round(1000 * extract(epoch FROM s.uploaded_at - j.started_at), 3),
       s.bytes, coalesce(s.object_bytes, -1), coalesce(s.sealed_key_id, '-'), :'state', s.id,
       round(1000 * extract(epoch FROM :'committed_at'::timestamptz - :'done_at'::timestamptz), 3),
       round(1000 * extract(epoch FROM j.started_at - :'committed_at'::timestamptz), 3)
FROM legacy_backup.snapshots s
JOIN LATERAL (SELECT started_at FROM legacy_backup.jobs WHERE snapshot_id = s.id AND kind = 'upload' ORDER BY id DESC LIMIT 1) j ON true
WHERE s.id = :'id';
SQL
  sleep 1
}
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then phases=(sealed plain); else phases=(plain sealed); fi
  for phase in "${phases[@]}"; do
    if [ "$phase" = sealed ]; then key_on; else key_off; fi
    reload
    for i in 0 1 2; do
      take_and_upload "$phase" "${SIZES[$(( (i + round) % 3 ))]}"
    done
  done
  echo "round $round done ($(elapsed))"
done

echo
echo "Writing the newest uploaded body of each size out of the cluster"
bodies=$CLUSTER/bodies; mkdir -p "$bodies"
seal_args=()
for n in "${SIZES[@]}"; do
  read -r id sha < <(q app -F' ' -c "SELECT id, sha256 FROM legacy_backup.snapshots WHERE session_id = 's$n' AND upload_state = 'uploaded' AND body IS NOT NULL ORDER BY snapshot_at DESC LIMIT 1")
  q app -c "SELECT encode(body, 'hex') FROM legacy_backup.snapshots WHERE id = '$id'" \
    | python3 -c "import sys; sys.stdout.buffer.write(bytes.fromhex(sys.stdin.read().strip()))" >"$bodies/s$n.json"
  got=$(sha256sum "$bodies/s$n.json" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || { echo "s$n: the written body's sha256 $got is not the recorded $sha"; exit 1; }
  echo "  s$n: $(stat -c %s "$bodies/s$n.json") bytes, sha256 as recorded"
  seal_args+=("$n=$bodies/s$n.json")
done
sealed_obj=$(q app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE sealed_key_id IS NOT NULL ORDER BY snapshot_at DESC LIMIT 1")
[ "$(head -c 6 "$S3_DIR/data/legacy-import/$sealed_obj")" = LBSEAL ] || { echo "$sealed_obj in s3s-fs is not sealed"; exit 1; }
bash scripts/pgcluster.sh stop "$CLUSTER"  # an idle machine for the seal timing

echo "Sealing and opening them with storage::seal ($SEAL_ROUNDS rounds)"
seal_results=$CLUSTER/seal.txt
target/release/examples/bench_seal "$SEAL_ROUNDS" "${seal_args[@]}" >"$seal_results"
echo "done after $(elapsed); raw figures in $results and $seal_results"

echo
python3 - "$results" "$seal_results" "$ROUNDS" "$SEAL_ROUNDS" <<'PY'
import statistics as st, sys
runs = [l.split() for l in open(sys.argv[1]) if l.strip()]
seals = [l.split() for l in open(sys.argv[2]) if l.strip()]
rounds, seal_rounds = sys.argv[3], sys.argv[4]
med = lambda xs: st.median(xs) if xs else float("nan")
bad = [r for r in runs if r[8] != "uploaded"]
if bad: print(f"NOT UPLOADED: {len(bad)} snapshots: {bad}")
ok = [r for r in runs if r[8] == "uploaded"]
# What the worker did decides the variant: a key id recorded or not.
against = [r for r in ok if (r[7] != "-") != (r[0] == "sealed")]
if against: print(f"note: {len(against)} snapshots were uploaded against their phase (the reload not yet seen); counted by what was recorded")
def col(n, sealed, c):
    return [float(r[c]) for r in ok if int(r[1]) == n and (sealed is None or (r[7] != "-") == sealed)]
def sealcol(n, op):
    return [float(s[2]) for s in seals if int(s[0]) == n and s[1] == op]
sizes = sorted({int(r[1]) for r in ok})
print(f"Medians, ms ({rounds} rounds: per size {rounds} sealed and {rounds} plain uploads; {seal_rounds} rounds of seal/open):")
print("documents | body MB | take | upload sealed | wake | job | upload plain | wake | job | seal | open | sha256 | bare cipher | seal / (take + upload sealed)")
for n in sizes:
    body = med([float(r[5]) for r in ok if int(r[1]) == n]) / 1e6
    take = med(col(n, None, 2))
    ups, upp = med(col(n, True, 3)), med(col(n, False, 3))
    s, o, h, a = (med(sealcol(n, op)) for op in ("seal", "open", "sha256", "aead"))
    ratio = s / (take + ups)
    print(" | ".join([f"{n:,}", f"{body:.2f}", f"{take:.1f}",
                      f"{ups:.1f}", f"{med(col(n, True, 11)):.1f}", f"{med(col(n, True, 4)):.1f}",
                      f"{upp:.1f}", f"{med(col(n, False, 11)):.1f}", f"{med(col(n, False, 4)):.1f}",
                      f"{s:.2f}", f"{o:.2f}", f"{h:.2f}", f"{a:.2f}",
                      f"{100 * ratio:.2f}% ({'meets' if ratio <= 0.05 else 'misses'} <= 5%)"]))
print()
print("Job (claim to recorded) sealed minus plain, medians: " + ", ".join(
    f"{n:,}: {med(col(n, True, 4)) - med(col(n, False, 4)):+.1f} ms" for n in sizes))
print("seal throughput (body MB/s, median): " + ", ".join(
    f"{n:,}: {med([float(x[3]) for x in seals if int(x[0]) == n]) / med(sealcol(n, 'seal')) / 1000:.0f}" for n in sizes))
print("commit of the take (ms, median): " + ", ".join(f"{n:,}: {med(col(n, None, 10)):.1f}" for n in sizes))
print()
print("All values, ms:")
fmt = lambda xs: ", ".join(f"{x:.1f}" for x in sorted(xs))
for n in sizes:
    print(f"  {n:,} take: {fmt(col(n, None, 2))}")
    print(f"  {n:,} upload sealed: {fmt(col(n, True, 3))}")
    print(f"  {n:,} upload plain:  {fmt(col(n, False, 3))}")
    for op in ("seal", "open", "aead"):
        xs = sealcol(n, op)
        print(f"  {n:,} {op}: min {min(xs):.2f}, max {max(xs):.2f}")
    ob = sorted({int(r[6]) - int(r[5]) for r in ok if int(r[1]) == n and r[7] != "-"})
    print(f"  {n:,} sealed object minus body: {ob} bytes")
PY

#!/usr/bin/env bash
# The PostgreSQL 15 package in a clean Debian root with no Rust toolchain: debootstrap bookworm,
# Debian's postgresql-15 (its main cluster preloading pg_stat_statements already), then
# packaging/install.sh (the script packaging/Dockerfile runs) with the worker's settings; the
# cluster restarted with the library preloaded; CREATE EXTENSION over the application's tables, a
# snapshot uploaded sealed to s3s-fs (outside the root: same network), legacy_backup_health() all
# ok; a cluster initdb'd afterwards (as the official images' entrypoint does) preloads it too.
# Builds dist/'s 15 package first when it is missing (scripts/package.sh). The root is made
# afresh each run and removed at exit (KEEP_ROOT=1 keeps it); mounts are always undone.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=$ROOT/.tmp/clean-root
CHROOT=$WORK/root
VERSION=$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)
DEB=dist/postgresql-15-legacy-backup_${VERSION}_$(dpkg --print-architecture).deb
t0=$(date +%s)
pass() { echo "  PASS: $*"; }
fail() { echo "  FAIL: $*"; exit 1; }
check() { [ "$2" = "$3" ] && pass "$1" || fail "$1: expected [$2], got [$3]"; }
secs() { echo $(( $(date +%s) - $1 )); }

# --- cleanup: stop what runs in the root, undo our mounts, then remove the root ---------------
in_root() { chroot "$CHROOT" "$@"; }
mounts_under() { findmnt -rn -o TARGET | grep -E "^$CHROOT(/|$)" | sort -r || true; }
cleanup() {
  local c0; c0=$(date +%s)
  if [ -d "$CHROOT/etc/postgresql" ]; then
    for c in "$CHROOT"/etc/postgresql/15/*/; do
      [ -d "$c" ] && in_root pg_ctlcluster 15 "$(basename "$c")" stop -m fast >/dev/null 2>&1 || true
    done
  fi
  # s3s-fs runs outside the root; its pid is kept in a file for a run that was killed.
  local pid
  if [ -f "$WORK/s3s-fs.pid" ]; then
    pid=$(cat "$WORK/s3s-fs.pid")
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$WORK/s3/data" && kill "$pid" 2>/dev/null || true
  fi
  # Anything still running inside the root (ours, from this or an interrupted run) holds mounts.
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$CHROOT" ] && kill -9 "${p#/proc/}" 2>/dev/null || true
  done
  local m
  for m in $(mounts_under); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  if [ -n "$(mounts_under)" ]; then
    echo "  still mounted under $CHROOT, not removing it:"; mounts_under; return 1
  fi
  [ "${KEEP_ROOT:-}" = 1 ] && [ "${1:-}" = exit ] || rm -rf --one-file-system "$WORK"
  [ "${1:-}" != exit ] || echo "  cleanup (cluster stopped, unmounted, root removed): $(secs "$c0") s"
}
trap 'cleanup exit' EXIT
cleanup   # what an interrupted earlier run left

# debootstrap is not in scripts/setup.sh's list; a fresh machine gets it here.
if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
if [ ! -f "$DEB" ]; then
  echo "building $DEB"
  MAJORS=15 bash scripts/package.sh
fi
deb_kib=$(( $(stat -c %s "$DEB") / 1024 ))
echo "package: $DEB ($deb_kib KiB)"

echo "clean root: debootstrap bookworm (minbase) from $MIRROR"
s=$(date +%s)
mkdir -p "$WORK"
debootstrap --variant=minbase bookworm "$CHROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
mount -t proc proc "$CHROOT/proc"
# PostgreSQL's dynamic shared memory is POSIX shm, in /dev/shm.
mount -t tmpfs -o mode=1777 shm "$CHROOT/dev/shm"
echo "  debootstrap: $(secs "$s") s"

echo "Debian's postgresql-15 in the root"
s=$(date +%s)
# No services start during apt (a chroot has no init); the test starts the cluster itself.
printf '#!/bin/sh\nexit 101\n' >"$CHROOT/usr/sbin/policy-rc.d"; chmod +x "$CHROOT/usr/sbin/policy-rc.d"
in_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >"$WORK/apt.log" 2>&1 \
  || { tail -20 "$WORK/apt.log"; fail "apt-get install postgresql-15"; }
echo "  apt-get install postgresql-15: $(secs "$s") s"
check "Debian created cluster 15/main" yes "$([ -f "$CHROOT/etc/postgresql/15/main/postgresql.conf" ] && echo yes)"
toolchain=$(in_root sh -c 'command -v cargo rustc rustup cc gcc clang || true'; find "$CHROOT" -xdev \( -name 'cargo' -o -name 'rustc' -o -name 'librustc_driver*' -o -name '.cargo' -o -name '.rustup' \) 2>/dev/null | sed -n 1,3p)
check "no Rust toolchain (nor C compiler) in the root" "" "$toolchain"

# The cluster already preloads something: install.sh must add to it, not replace it.
# Only a socket inside the root: no TCP port of the host's is taken.
cat >"$CHROOT/etc/postgresql/15/main/conf.d/00-site.conf" <<CONF
shared_preload_libraries = 'pg_stat_statements'
listen_addresses = ''
CONF

# The official postgres images (pgvector's too) keep the sample config as a symlink to
# /usr/share/postgresql/postgresql.conf.sample (their Dockerfile does this): the same here, so
# install.sh edits the sample as it will in packaging/Dockerfile.
in_root sh -ec 'dpkg-divert --quiet --add --rename --divert /usr/share/postgresql/postgresql.conf.sample.dpkg /usr/share/postgresql/15/postgresql.conf.sample
  cp /usr/share/postgresql/postgresql.conf.sample.dpkg /usr/share/postgresql/postgresql.conf.sample
  ln -s ../postgresql.conf.sample /usr/share/postgresql/15/'

echo "packaging/install.sh in the root"
mkdir -p "$CHROOT/tmp/lb/fixtures"
cp "$DEB" packaging/install.sh "$CHROOT/tmp/lb/"
cp tests/fixtures/app_schema.sql tests/fixtures/seed.sql "$CHROOT/tmp/lb/fixtures/"
S3_PORT=$((21500 + RANDOM % 400))
S3_DIR=$WORK/s3
CREDS=/etc/postgresql/15/main/legacy_backup-r2.env
settings=(legacy_backup.database=app legacy_backup.naptime=1s
  "legacy_backup.r2_endpoint=http://127.0.0.1:$S3_PORT" "legacy_backup.r2_credentials_file=$CREDS")
s=$(date +%s%N)
in_root bash /tmp/lb/install.sh "/tmp/lb/$(basename "$DEB")" "${settings[@]}" | sed 's/^/  /'
# Rerun: replaces what the first run wrote, never adds legacy_backup twice.
in_root bash /tmp/lb/install.sh "/tmp/lb/$(basename "$DEB")" "${settings[@]}" >/dev/null
echo "  install.sh: $(( ($(date +%s%N) - s) / 1000000 )) ms (twice)"
check "the sample edited through its symlink, once" "symlink 1" \
  "$([ -L "$CHROOT/usr/share/postgresql/15/postgresql.conf.sample" ] && echo symlink) $(grep -c '^# legacy_backup (packaging/install.sh)' "$CHROOT/usr/share/postgresql/postgresql.conf.sample")"
check "the .so's libraries all resolve in the root" "" "$(in_root ldd /usr/lib/postgresql/15/lib/legacy_backup.so | grep 'not found' || true)"
check "installed in Debian's layout" "yes yes" \
  "$([ -f "$CHROOT/usr/lib/postgresql/15/lib/legacy_backup.so" ] && echo yes) $([ -f "$CHROOT/usr/share/postgresql/15/extension/legacy_backup--$VERSION.sql" ] && echo yes)"

# The worker's credentials and sealing key, as docs/operations.md has them (0600, postgres's).
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'R2_ACCESS_KEY_ID=lbpkgaccess\nR2_SECRET_ACCESS_KEY=lbpkgsecret-test-only\nLEGACY_BACKUP_KEY=%s\n' "$KEY" >"$CHROOT$CREDS"
in_root chown postgres:postgres "$CREDS"; chmod 600 "$CHROOT$CREDS"
mkdir -p "$S3_DIR/data/legacy-import"
command -v s3s-fs >/dev/null || fail "s3s-fs missing: run scripts/setup.sh"
RUST_LOG=warn s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key lbpkgaccess \
  --secret-key lbpkgsecret-test-only "$S3_DIR/data" >"$S3_DIR/s3s.log" 2>&1 &
echo $! >"$WORK/s3s-fs.pid"
up=
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null && { up=1; break; }; sleep 0.1; done
[ -n "$up" ] || { cat "$S3_DIR/s3s.log"; fail "s3s-fs did not start"; }

echo "smoke test"
in_root pg_ctlcluster 15 main start || { tail -20 "$CHROOT/var/log/postgresql/postgresql-15-main.log"; fail "cluster start"; }
psql_() { in_root runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
check "shared_preload_libraries appended to" "pg_stat_statements,legacy_backup" "$(psql_ -c 'SHOW shared_preload_libraries')"
psql_ -c "CREATE DATABASE app"
psql_ -d app -f /tmp/lb/fixtures/app_schema.sql >/dev/null
psql_ -d app -v sid=smoke -v docs=200 -f /tmp/lb/fixtures/seed.sql >/dev/null
psql_ -d app -c "CREATE EXTENSION legacy_backup"
check "CREATE EXTENSION legacy_backup $VERSION" "$VERSION" "$(psql_ -d app -c "SELECT extversion FROM pg_extension WHERE extname = 'legacy_backup'")"
wait_for() { # what sql expected seconds
  local deadline=$(( $(date +%s) + $4 )) got
  while :; do
    got=$(psql_ -d app -c "$2" 2>/dev/null || true)
    [ "$got" = "$3" ] && { pass "$1"; return 0; }
    [ "$(date +%s)" -gt "$deadline" ] && fail "$1: waited $4 s for [$3], last [$got]"
    sleep 0.2
  done
}
# The worker started before database app existed; it retries every 5 s.
wait_for "the worker runs for database app" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker' AND datname = 'app'" 1 30
id=$(psql_ -d app -c "SELECT legacy_snapshot_take('smoke', 'u-partner')->>'snapshotId'")
[ -n "$id" ] && pass "legacy_snapshot_take: snapshot $id" || fail "legacy_snapshot_take returned no id"
wait_for "snapshot uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id'" uploaded 20
key=$(psql_ -d app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$id'")
check "the object in s3s-fs is sealed" LBSEAL "$(head -c 6 "$S3_DIR/data/legacy-import/$key" 2>/dev/null)"
checks=$(psql_ -d app -c "SELECT count(*) FROM legacy_backup_health()")
check "legacy_backup_health(): all $checks checks ok" "" "$(psql_ -d app -c "SELECT string_agg(check_name || ': ' || detail, '; ') FROM legacy_backup_health() WHERE NOT ok")"

# A cluster made after the install (the official image's entrypoint runs initdb): preloaded too.
in_root runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D /tmp/later -A trust >/dev/null
check "a cluster initdb'd afterwards preloads it" legacy_backup \
  "$(in_root runuser -u postgres -- /usr/lib/postgresql/15/bin/postgres -C shared_preload_libraries -D /tmp/later)"

echo "PASS clean root: postgresql-15-legacy-backup $VERSION ($deb_kib KiB) installed and smoke-tested in a clean bookworm root with no Rust, in $(secs "$t0") s"

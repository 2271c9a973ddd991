#!/usr/bin/env bash
# Idempotent machine setup for legacy_backup: Debian packages, sudo, cargo-pgrx 0.18.1,
# `cargo pgrx init` against the system PostgreSQL 15, and the s3s-fs test server. (python3 runs
# the fault proxy of the fault suite; python3-venv holds matplotlib for the scaling plot.)
# Every step checks first and skips what is already done.
set -euo pipefail
PGRX_VERSION=0.18.1
S3S_VERSION=0.14.1
log() { printf '[setup] %s\n' "$*"; }

need_pkgs=()
for p in postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo pkg-config make python3 python3-venv; do
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

if [ -f "$HOME/.pgrx/config.toml" ] && grep -q 'pg15' "$HOME/.pgrx/config.toml"; then
  log "pgrx already initialised for pg15"
else
  log "cargo pgrx init --pg15 /usr/bin/pg_config"
  cargo pgrx init --pg15 /usr/bin/pg_config
fi

if command -v s3s-fs >/dev/null && s3s-fs --version 2>/dev/null | grep -q "$S3S_VERSION"; then
  log "s3s-fs $S3S_VERSION present"
else
  log "installing s3s-fs $S3S_VERSION (about 3.5 minutes)"
  cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked
fi
log "done"

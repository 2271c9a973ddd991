#!/usr/bin/env bash
# Installable packages (issue #21): for each major, from `cargo pgrx package`, a Debian package
# postgresql-<major>-legacy-backup_<version>_<arch>.deb in Debian's layout
# (/usr/lib/postgresql/<major>/lib, /usr/share/postgresql/<major>/extension) and a tarball of the
# same files, in dist/. The version is Cargo.toml's. Nothing is installed on this machine.
# MAJORS="15 16" picks majors; by default every major scripts/pg.sh knows.
# packaging/install.sh installs a .deb and preloads the library.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# No `| head` after a writer anywhere here: with pipefail its SIGPIPE would end the script.
VERSION=$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)
ARCH=$(dpkg --print-architecture)
# The case labels of scripts/pg.sh, so a major added there is packaged too.
MAJORS=${MAJORS:-$(sed -nE 's/^ *([0-9]+)\) *PG_CONFIG=.*/\1/p' scripts/pg.sh | tr '\n' ' ')}
DESCRIPTION=$(awk -F'"' '/^description *=/ {print $2; exit}' Cargo.toml)
mkdir -p dist .tmp/package

for major in $MAJORS; do
  ( # a subshell per major: scripts/pg.sh sets PG_CONFIG and exits on an unknown major
  PG=$major
  source scripts/pg.sh
  tree=target/release/legacy_backup-pg$major
  # Emptied first: files of an older build must not end up in the package.
  rm -rf "$tree"
  start=$(date +%s%N)
  if ! cargo pgrx package --pg-config "$PG_CONFIG" >".tmp/package/cargo-pgrx-pg$major.log" 2>&1; then
    cat ".tmp/package/cargo-pgrx-pg$major.log"; exit 1
  fi
  build_s=$(( ($(date +%s%N) - start) / 1000000 ))
  compiled=$(sed 's/\x1b\[[0-9;]*m//g' ".tmp/package/cargo-pgrx-pg$major.log" | grep -c '^ *Compiling' || true)

  # pgrx lays the tree out at pg_config's own paths (/opt/... for the wheel builds);
  # a package for Debian and the official images uses Debian's paths.
  lib=$tree$("$PG_CONFIG" --pkglibdir)/legacy_backup.so
  ext=$tree$("$PG_CONFIG" --sharedir)/extension
  [ -f "$lib" ] && [ -f "$ext/legacy_backup.control" ] && [ -f "$ext/legacy_backup--$VERSION.sql" ] \
    || { echo "cargo pgrx package left no complete tree under $tree" >&2; exit 1; }
  stage=.tmp/package/pg$major
  rm -rf "$stage"
  install -D -m 755 "$lib" "$stage/usr/lib/postgresql/$major/lib/legacy_backup.so"
  install -d "$stage/usr/share/postgresql/$major/extension"
  install -m 644 "$ext"/legacy_backup* "$stage/usr/share/postgresql/$major/extension/"

  # Depends: the server, and the packages of the libraries the .so links (libc6 at the newest
  # GLIBC symbol version it uses, so an older system refuses the install rather than the load).
  deps="postgresql-$major" seen=" "
  for needed in $(objdump -p "$lib" | awk '/NEEDED/ {print $2}'); do
    path=$(ldconfig -p | awk -v n="$needed" '$1 == n && !found {print $NF; found = 1}')
    pkg=
    # dpkg records /lib/... on merged-/usr systems, where the real file is under /usr/lib.
    for candidate in "$path" "$(readlink -f "$path")" "$(readlink -f "$path" | sed 's|^/usr/|/|')"; do
      pkg=$(dpkg -S "$candidate" 2>/dev/null | awk -F: 'NR == 1 {print $1}') && [ -n "$pkg" ] && break
    done
    [ -n "$pkg" ] || { echo "no Debian package owns $needed ($path)" >&2; exit 1; }
    case $seen in *" $pkg "*) continue ;; esac
    seen="$seen$pkg "
    if [ "$pkg" = libc6 ]; then
      glibc=$(objdump -T "$lib" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1 || true)
      deps="$deps, libc6${glibc:+ (>= $glibc)}"
    else
      deps="$deps, $pkg"
    fi
  done

  name=postgresql-$major-legacy-backup
  mkdir -p "$stage/DEBIAN"
  cat >"$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $VERSION
Architecture: $ARCH
Maintainer: legacy_backup maintainers <root@localhost>
Depends: $deps
Section: database
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Description: legacy_backup extension for PostgreSQL $major
 $DESCRIPTION.
 Needs shared_preload_libraries = 'legacy_backup' and a restart (packaging/install.sh sets it),
 then CREATE EXTENSION legacy_backup in the application's database.
CONTROL
  (cd "$stage" && find usr -type f -exec md5sum {} + >DEBIAN/md5sums)
  deb=dist/${name}_${VERSION}_${ARCH}.deb
  tarball=dist/legacy_backup-${VERSION}-pg${major}-${ARCH}.tar.gz
  dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
  tar -C "$stage" --owner=0 --group=0 --exclude=DEBIAN -czf "$tarball" usr
  printf 'PostgreSQL %s: cargo pgrx package %s s (%s crates compiled); %s %s KiB; %s %s KiB\n' \
    "$major" "$(awk -v ms="$build_s" 'BEGIN {printf "%.1f", ms / 1000}')" "$compiled" \
    "$deb" "$(( $(stat -c %s "$deb") / 1024 ))" "$tarball" "$(( $(stat -c %s "$tarball") / 1024 ))"
  )
done

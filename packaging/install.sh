#!/usr/bin/env bash
# Installs a postgresql-<major>-legacy-backup .deb (scripts/package.sh) and preloads the library:
#   - clusters to be created later: the block goes at the end of the server's
#     postgresql.conf.sample, which initdb copies (the official postgres images' docker-entrypoint,
#     Debian's pg_createcluster);
#   - Debian clusters that exist now (/etc/postgresql/<major>/<cluster>): a conf.d drop-in.
# shared_preload_libraries keeps what a cluster already preloads; legacy_backup is added to it.
# Each SETTING=VALUE argument (e.g. legacy_backup.database=app) is written beside it.
# Run as root; rerunning replaces what an earlier run wrote. A restart makes it take effect.
# Used by tests/package/t_clean_root.sh and packaging/Dockerfile.
#   packaging/install.sh PACKAGE.deb [SETTING=VALUE ...]
set -euo pipefail
deb=${1:?usage: install.sh PACKAGE.deb [SETTING=VALUE ...]}
shift
MARK='# legacy_backup (packaging/install.sh)'
log() { printf '[install] %s\n' "$*"; }

major=$(dpkg-deb -f "$deb" Package | sed -nE 's/^postgresql-([0-9]+)-legacy-backup$/\1/p')
[ -n "$major" ] || { echo "$deb is not a postgresql-<major>-legacy-backup package" >&2; exit 1; }
BIN=/usr/lib/postgresql/$major/bin
[ -x "$BIN/postgres" ] || { echo "PostgreSQL $major is not installed ($BIN/postgres)" >&2; exit 1; }
# dpkg, not apt: nothing is downloaded; the package's one real dependency is the server above.
out=$(dpkg -i "$deb" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
log "installed $(dpkg-query -W -f='${Package} ${Version}' "postgresql-$major-legacy-backup")"

for arg in "$@"; do
  [[ $arg =~ ^[a-z_][a-z0-9_.]*=.*$ ]] || { echo "not SETTING=VALUE: $arg" >&2; exit 1; }
done

# The appended list: legacy_backup after whatever $1 preloads ('' or a list, quoted or not).
with_legacy_backup() {
  local list
  list=$(printf '%s' "$1" | tr -d "'\" ")
  case ",$list," in
    *,legacy_backup,*) ;;
    ,,) list=legacy_backup ;;
    *) list=$list,legacy_backup ;;
  esac
  printf '%s' "$list"
}

# The lines to write: the preload list, then the settings given.
conf_lines() { # preload-list
  printf '%s\n' "$MARK" "shared_preload_libraries = '$1'"
  local arg
  for arg in "${@:2}"; do
    printf "%s = '%s'\n" "${arg%%=*}" "$(printf '%s' "${arg#*=}" | sed "s/'/''/g")"
  done
}

# Clusters created later: initdb copies postgresql.conf.sample. The official images keep it as a
# symlink to ../postgresql.conf.sample, so the real file is edited in place.
sample=$(readlink -f "/usr/share/postgresql/$major/postgresql.conf.sample")
if [ -f "$sample" ]; then
  tmp=$(mktemp)
  # An earlier run's block is dropped first (it runs from the marker to the end of the file).
  awk -v m="$MARK" '$0 == m {exit} {print}' "$sample" >"$tmp"
  current=$(sed -nE "s/^[[:space:]]*shared_preload_libraries[[:space:]]*=[[:space:]]*('[^']*'|[^[:space:]#]*).*/\1/p" "$tmp" | tail -1)
  conf_lines "$(with_legacy_backup "$current")" "$@" >>"$tmp"
  cat "$tmp" >"$sample"
  rm -f "$tmp"
  log "new clusters: $sample"
fi

# Debian's clusters that exist now: a drop-in in conf.d, merged with what the cluster preloads.
for conf in /etc/postgresql/"$major"/*/postgresql.conf; do
  [ -f "$conf" ] || continue
  dir=$(dirname "$conf")
  grep -Eq "^[[:space:]]*include_dir[[:space:]]*=[[:space:]]*'conf.d'" "$conf" \
    || { echo "$conf does not include conf.d: add include_dir = 'conf.d'" >&2; exit 1; }
  mkdir -p "$dir/conf.d"
  rm -f "$dir/conf.d/legacy_backup.conf"
  # What the server itself reads (every include, postgresql.auto.conf), as its own user.
  pg_value() { runuser -u postgres -- "$BIN/postgres" -C "$1" -c config_file="$conf"; }
  current=$(pg_value shared_preload_libraries)
  conf_lines "$(with_legacy_backup "$current")" "$@" >"$dir/conf.d/legacy_backup.conf"
  chown postgres:postgres "$dir/conf.d/legacy_backup.conf"
  # A later line or ALTER SYSTEM would override the drop-in; then say so rather than pass.
  effective=$(pg_value shared_preload_libraries)
  case ",$(printf '%s' "$effective" | tr -d ' ')," in
    *,legacy_backup,*) log "cluster $major/$(basename "$dir"): shared_preload_libraries = '$effective' (restart to load)" ;;
    *) echo "cluster $major/$(basename "$dir"): shared_preload_libraries is '$effective' after $dir/conf.d/legacy_backup.conf; something later overrides it" >&2; exit 1 ;;
  esac
done

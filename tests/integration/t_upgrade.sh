#!/usr/bin/env bash
# ALTER EXTENSION legacy_backup UPDATE from the first released version (0.1.0, its install script
# frozen in tests/upgrade/) on a database holding data: the data is kept, the functions work on
# it, and the updated database has exactly the objects of a fresh install of the current version
# (tests/upgrade/catalog.sql, compared line for line).
source "$(dirname "$0")/lib.sh"
FIRST=0.1.0
CURRENT=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
# The library is the current one; the 0.1.0 script only needs its install script alongside.
install -m 644 "$ROOT/tests/upgrade/legacy_backup--$FIRST.sql" "$("$PG_CONFIG" --sharedir)/extension/"
start_cluster
check "an update path $FIRST -> $CURRENT is installed" "$FIRST--$CURRENT" \
  "$(q postgres -c "SELECT source || '--' || target FROM pg_available_extension_versions v, pg_extension_update_paths('legacy_backup') p WHERE v.name = 'legacy_backup' AND v.version = p.source AND p.source = '$FIRST' AND p.target = '$CURRENT' AND p.path IS NOT NULL LIMIT 1")"

echo "a $FIRST database holding data"
q postgres -c "CREATE DATABASE old"
load_app old up 500
q old -f "$ROOT/tests/fixtures/app_workload.sql"
q old -c "CREATE EXTENSION legacy_backup VERSION '$FIRST'"
check "installed as $FIRST" "$FIRST" "$(q old -c "SELECT extversion FROM pg_extension WHERE extname = 'legacy_backup'")"
q old -c "SELECT legacy_snapshot_take('up')" >/dev/null
for i in 1 2 3 4 5; do
  q old -c "BEGIN" -c "SELECT app_categorize('up-doc-00000$i', 'up-cat-002', 'u-paralegal')" -c "COMMIT" >/dev/null
done
q old -c "BEGIN" -c "SELECT app_merge('up', 'up-cat-001', ARRAY['up-cat-003'], 'u-partner')" -c "COMMIT" >/dev/null
q old -c "SELECT legacy_undo_last_categorization('u-paralegal')" >/dev/null
q old -c "SELECT legacy_snapshot_take('up')" >/dev/null
# A session exported under the old version: its cleanup schedule must carry over (0.3.0 keeps
# the schedule in the extension's own table).
q old -v sid=up2 -v docs=20 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
q old -c "SELECT legacy_snapshot_take('up2')" -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'up2'" >/dev/null
fingerprint() {
  q old -c "SELECT (SELECT count(*) || ':' || md5(string_agg((to_jsonb(l) - 'db_role')::text, '|' ORDER BY id)) FROM category_assignment_logs l)
             || ' ' || (SELECT count(*) || ':' || md5(string_agg(concat_ws(',', id, snapshot_key, sha256, bytes, upload_state, body IS NULL), '|' ORDER BY id)) FROM legacy_backup.snapshots)
             || ' ' || (SELECT count(*) || ':' || md5(string_agg(concat_ws(',', id, kind, session_id, snapshot_id, state, requested_by), '|' ORDER BY id)) FROM legacy_backup.jobs)
             || ' ' || (SELECT md5(string_agg(concat_ws(',', id, category_id, status, categorized_by), '|' ORDER BY id)) FROM extracted_documents)"
}
before=$(fingerprint)
echo "  info: log rows, snapshots, jobs before: $(echo "$before" | sed 's/:[0-9a-f]*//g')"

echo "ALTER EXTENSION legacy_backup UPDATE"
q old -c "ALTER EXTENSION legacy_backup UPDATE"
check "now $CURRENT" "$CURRENT" "$(q old -c "SELECT extversion FROM pg_extension WHERE extname = 'legacy_backup'")"
check "log, snapshots, jobs and documents unchanged" "$before" "$(fingerprint)"
check "the old export's cleanup schedule carried into legacy_backup.cleanup_schedule" t \
  "$(q old -c "SELECT c.scheduled_at = s.cleanup_scheduled_at FROM legacy_backup.cleanup_schedule c JOIN legacy_import_sessions s ON s.id = c.session_id WHERE c.session_id = 'up2'")"

echo "a fresh $CURRENT install to compare with"
q postgres -c "CREATE DATABASE fresh"
load_app fresh up 500
q fresh -c "CREATE EXTENSION legacy_backup"
q old -f "$ROOT/tests/upgrade/catalog.sql" >"$CLUSTER/catalog-updated.txt"
q fresh -f "$ROOT/tests/upgrade/catalog.sql" >"$CLUSTER/catalog-fresh.txt"
echo "  info: $(wc -l <"$CLUSTER/catalog-fresh.txt") catalog facts compared"
if ! diff -u "$CLUSTER/catalog-fresh.txt" "$CLUSTER/catalog-updated.txt" >"$CLUSTER/catalog.diff"; then
  head -40 "$CLUSTER/catalog.diff"
fi
check "updated database = fresh install, fact for fact" 0 "$(grep -c '^[-+][^-+]' "$CLUSTER/catalog.diff" || true)"

echo "the updated extension works on the old data"
check "history spans the update" t "$(q old -c "SELECT count(*) >= 2 FROM legacy_document_history('up-doc-000002')")"
check "undo walks back into pre-update changes" "up-doc-000004" "$(q old -c "SELECT legacy_undo_last_categorization('u-paralegal')->'documents'->0->>'documentId'")"
check "a snapshot taken after the update" 4 "$(q old -c "SELECT legacy_snapshot_take('up') IS NOT NULL" >/dev/null; q old -c "SELECT count(*) FROM legacy_backup.snapshots")"
check "snapshots from before 0.6.0 are shown plain, with their recorded sha256" "3 0" \
  "$(q old -F' ' -c "SELECT count(*) FILTER (WHERE NOT sealed AND sha256 ~ '^[0-9a-f]{64}$'), count(*) FILTER (WHERE key_id IS NOT NULL) FROM legacy_snapshots WHERE snapshot_at < (SELECT max(snapshot_at) FROM legacy_snapshots)")"
check "every recorded chain link is the sha256 of the session's snapshot before" "0 t" \
  "$(q old -F' ' -c "SELECT count(*) FILTER (WHERE n.previous_sha256 IS DISTINCT FROM p.sha256 AND n.previous_sha256 IS NOT NULL), bool_or(n.previous_sha256 IS NOT NULL)
                     FROM legacy_backup.snapshots n LEFT JOIN LATERAL (SELECT sha256 FROM legacy_backup.snapshots p WHERE p.session_id = n.session_id AND p.snapshot_at < n.snapshot_at ORDER BY p.snapshot_at DESC LIMIT 1) p ON true")"
check "the new DROP EXTENSION guard protects the old data" 2BP01 "$(q old -c "DO \$\$ BEGIN DROP EXTENSION legacy_backup CASCADE; EXCEPTION WHEN others THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed -n 's/.*NOTICE: *//p')"

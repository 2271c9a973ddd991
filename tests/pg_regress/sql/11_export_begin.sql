-- An export that began on a fresh snapshot (legacy_export_begin) is not refused for the
-- snapshot's age when it completes, however long the upload took; a categorization during the
-- upload still refuses it (SNAPSHOT_OUTDATED, LB003); exports that did not begin this way keep
-- the strict gate.
\set VERBOSITY default
\set ECHO none
\i tests/fixtures/app_workload.sql
\set docs 20
\set cats 3
\set months 2
\set sid eb-1
\i tests/fixtures/seed.sql
\set sid eb-2
\i tests/fixtures/seed.sql
\set sid eb-3
\i tests/fixtures/seed.sql
\set ECHO all

-- Begin: no snapshot yet, so one is taken and pinned; the answer is the gate's verdict.
SELECT r->>'code' AS code, r->'ready' AS ready, r->>'exportBegunAt' IS NOT NULL AS begun, r->'snapshotId' IS NOT NULL AS has_snapshot
FROM (SELECT legacy_export_begin('eb-1', 'u-partner') AS r) x;
SELECT action, user_id, details->'snapshotTaken' AS snapshot_taken FROM legacy_import_audit_logs WHERE session_id = 'eb-1' AND action = 'EXPORT_BEGUN';
-- eb-2 takes a snapshot the ordinary way, without beginning an export.
SELECT legacy_snapshot_take('eb-2', 'u-partner') IS NOT NULL AS taken;

-- The upload takes longer than max_snapshot_age.
SET legacy_backup.max_snapshot_age = '1s';
SELECT pg_sleep(1.2);
SELECT id, r->>'code' AS code, r->>'exportBegunAt' IS NOT NULL AS begun
FROM (SELECT id, legacy_export_readiness(id) AS r FROM legacy_import_sessions WHERE id IN ('eb-1', 'eb-2')) x ORDER BY id;
-- The begun export completes (one autocommit statement, as the application sends it) ...
UPDATE legacy_import_sessions SET status = 'Exported', exported_at = now(), updated_at = now() WHERE id = 'eb-1';
SELECT status, cleanup_scheduled_at > now() AS cleanup_scheduled FROM legacy_import_sessions WHERE id = 'eb-1';
SELECT details->>'exportBegunAt' IS NOT NULL AS began, details->>'verdict' AS verdict
FROM legacy_import_audit_logs WHERE session_id = 'eb-1' AND action = 'EXPORT_SNAPSHOT_VERIFIED';
SELECT count(*) AS exports_under_way FROM legacy_backup.export_begins WHERE session_id = 'eb-1';
-- ... the one that did not begin is refused for age, as before.
SELECT code, message FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'eb-2'$$);
RESET legacy_backup.max_snapshot_age;

-- A categorization during the upload: the begun export is refused as outdated, and nothing changes.
SELECT legacy_export_begin('eb-3', 'u-partner')->>'code' AS code;
SELECT app_categorize('eb-3-doc-000010', 'eb-3-cat-003', 'u-paralegal');
SELECT code, message FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'eb-3'$$);
SELECT status FROM legacy_import_sessions WHERE id = 'eb-3';
-- Beginning again takes a snapshot holding that change; then the export goes through.
SELECT r->>'code' AS code, r->>'exportBegunAt' IS NOT NULL AS begun FROM (SELECT legacy_export_begin('eb-3', 'u-partner') AS r) x;
SELECT details->'snapshotTaken' AS snapshot_taken FROM legacy_import_audit_logs WHERE session_id = 'eb-3' AND action = 'EXPORT_BEGUN' ORDER BY "timestamp";
UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'eb-3';
SELECT status FROM legacy_import_sessions WHERE id = 'eb-3';

-- An exported session cannot begin again: the verdict says so, nothing is pinned or taken.
SELECT count(*) AS snapshots_before FROM legacy_backup.snapshots WHERE session_id = 'eb-1' \gset
SELECT r->>'code' AS code, r->'ready' AS ready, r->'exportBegunAt' AS begun FROM (SELECT legacy_export_begin('eb-1', 'u-partner') AS r) x;
SELECT count(*) - :snapshots_before AS snapshots_taken, (SELECT count(*) FROM legacy_backup.export_begins WHERE session_id = 'eb-1') AS pinned
FROM legacy_backup.snapshots WHERE session_id = 'eb-1';

-- Bad input.
SELECT code, message FROM regress.error_of($$SELECT legacy_export_begin(NULL, 'u-partner')$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_export_begin('../x', 'u-partner')$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_export_begin('no-such-session', 'u-partner')$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_export_begin('eb-2', 'nobody')$$);
SELECT count(*) AS pinned_by_bad_input FROM legacy_backup.export_begins WHERE session_id IN ('eb-2', 'no-such-session');

-- Deleting a session drops its pin.
SELECT legacy_export_begin('eb-2', 'u-partner')->>'code' AS code;
DELETE FROM legacy_import_sessions WHERE id = 'eb-2';
SELECT count(*) AS pins_left FROM legacy_backup.export_begins WHERE session_id = 'eb-2';

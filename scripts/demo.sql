\echo '== CREATE EXTENSION attaches to the application tables (adds last_snapshot_at, cleanup_scheduled_at)'
CREATE EXTENSION legacy_backup;
SELECT * FROM legacy_backup_health();

\echo '== legacy_snapshot: the session''s categorization, counted from the rows (no side effects)'
SELECT j->>'sessionId' AS session, j->>'pstFileName' AS pst_file, j->>'status' AS status,
       j->'stats'->>'total' AS documents, j->'stats'->>'categorized' AS categorized,
       j->'stats'->>'skipped' AS skipped, j->'stats'->>'uncategorized' AS uncategorized,
       json_array_length(j->'categories') AS categories, json_array_length(j->'batches') AS batches
FROM (SELECT legacy_snapshot('demo-session') AS j) s;

\echo '== Counters the application let drift, found by the snapshot'
SELECT c->>'entity' AS entity, c->>'id' AS id, c->>'field' AS counter, c->>'stored' AS stored, c->>'actual' AS actual
FROM json_array_elements(legacy_snapshot('demo-session')->'consistency') c;

\echo '== legacy_snapshot_take: stored with its sha256, keyed for R2, audited'
\timing on
SELECT jsonb_pretty(legacy_snapshot_take('demo-session', 'u-partner')) AS snapshot;
\timing off
SELECT session_id, snapshot_at, taken_by, size, documents, categorized, upload_state, snapshot_key
FROM legacy_snapshots;
SELECT action, user_id, details->>'snapshotKey' AS key, details->>'bytes' AS bytes
FROM legacy_import_audit_logs ORDER BY "timestamp" DESC LIMIT 1;
SELECT id, last_snapshot_at FROM legacy_import_sessions;

\echo '== Bad input gets a clear error and changes nothing'
\set ON_ERROR_STOP off
SELECT legacy_snapshot_take('../other-session');
\set ON_ERROR_STOP on
SELECT count(*) AS snapshots_stored FROM legacy_snapshots;

\echo '== Audit trail: an assistant categorizes a document (the application sets legacy_backup.actor)'
BEGIN;
SELECT set_config('legacy_backup.actor', 'u-paralegal', true);
SELECT app_categorize('demo-session-doc-007777', 'demo-session-cat-005', 'u-paralegal');
COMMIT;
SELECT changed_at, old_category_id, new_category_id, old_status, new_status, changed_by, attribution, source
FROM legacy_document_history('demo-session-doc-007777');

\echo '== A partner merges two categories into one: one UPDATE, every moved document logged'
BEGIN;
SELECT set_config('legacy_backup.actor', 'u-partner', true);
SELECT app_merge('demo-session', 'demo-session-cat-010', ARRAY['demo-session-cat-011', 'demo-session-cat-012'], 'u-partner') AS documents_moved;
COMMIT;
SELECT changed_by, name, source, documents, changes FROM legacy_session_activity('demo-session');

\echo '== The merge was a mistake: undo restores every document it moved, and the counters'
SELECT r->'bulk' AS bulk, r->'undoneChanges' AS undone_changes
FROM (SELECT legacy_undo_last_categorization('u-partner') AS r) x;
SELECT id, document_count, merged_into FROM import_categories
WHERE id IN ('demo-session-cat-010', 'demo-session-cat-011', 'demo-session-cat-012') ORDER BY id;
SELECT changed_by, name, source, documents, changes FROM legacy_session_activity('demo-session');

\echo '== The session as it was before the merge, rebuilt from the log, equals the first snapshot'
SELECT count(*) AS documents_differing_from_first_snapshot
FROM (SELECT d->>'id' AS id, d->>'categoryId' AS category_id, d->>'status' AS status
      FROM json_array_elements((SELECT convert_from(body, 'UTF8')::json->'documents' FROM legacy_backup.snapshots ORDER BY snapshot_at LIMIT 1)) d) s
FULL JOIN legacy_categorization_at('demo-session', (SELECT snapshot_at FROM legacy_backup.snapshots ORDER BY snapshot_at LIMIT 1)) a
  ON a.document_id = s.id
WHERE s.id IS NULL OR a.document_id IS NULL OR s.category_id IS DISTINCT FROM a.category_id OR s.status IS DISTINCT FROM a.status;

\echo '== Export gate: the categorization changed since the snapshot, so the export is refused'
SELECT r->>'code' AS code, r->>'message' AS message FROM (SELECT legacy_export_readiness('demo-session') AS r) x;
\set ON_ERROR_STOP off
UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'demo-session';
\set ON_ERROR_STOP on
\echo '== A fresh snapshot, then the export goes through and the cleanup is scheduled, not done'
SELECT legacy_snapshot_take('demo-session', 'u-partner')->>'snapshotKey' AS snapshot_key;
SELECT r->>'code' AS code, r->>'message' AS message FROM (SELECT legacy_export_readiness('demo-session') AS r) x;
BEGIN;
SELECT set_config('legacy_backup.actor', 'u-partner', true);
UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'demo-session';
COMMIT;
SELECT status, exported_at, cleanup_scheduled_at, cleaned_up_at FROM legacy_import_sessions WHERE id = 'demo-session';
SELECT action, user_id, details->>'snapshotKey' AS relied_on, details->>'cleanupScheduledAt' AS cleanup_at
FROM legacy_import_audit_logs WHERE action = 'EXPORT_SNAPSHOT_VERIFIED';

\echo '== The background worker uploaded every snapshot to R2 (s3s-fs here) and verified it'
SELECT pg_sleep(1.5);
SELECT session_id, snapshot_at, size, upload_state, uploaded_at IS NOT NULL AS uploaded FROM legacy_snapshots;
SELECT id, kind, state, attempts, last_error FROM legacy_backup_jobs ORDER BY id;

\echo '== The recovery window ends (moved forward for the demo): the worker cleans up the session''s files'
-- (Nobody can move a cleanup earlier, not even a superuser; the demo re-exports with no delay.)
BEGIN;
SET LOCAL legacy_backup.cleanup_delay = '0';
UPDATE legacy_import_sessions SET status = 'Completed', updated_at = now() WHERE id = 'demo-session';
UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'demo-session';
COMMIT;
SELECT pg_sleep(3);
SELECT status, cleanup_scheduled_at IS NOT NULL AS was_scheduled, cleaned_up_at IS NOT NULL AS cleaned_up FROM legacy_import_sessions;
SELECT kind, state, progress->>'deleted' AS deleted, progress->'prefixes' AS prefixes FROM legacy_backup_jobs WHERE kind = 'cleanup';
SELECT action, user_id, details->>'deleted' AS deleted, details->>'snapshotKey' AS snapshot_kept
FROM legacy_import_audit_logs WHERE action = 'R2_CLEANUP_COMPLETED';
SELECT check_name, ok, detail FROM legacy_backup_health() WHERE check_name IN ('background worker', 'failed jobs', 'snapshots awaiting upload', 'backup sealing key', 'backup objects');
\echo '== The backups: sealed, chained, verified (the object key, its state)'
SELECT snapshot_key, sealed, key_id, check_state FROM legacy_snapshots WHERE session_id = 'demo-session' ORDER BY snapshot_at;
SELECT snapshot_key, state FROM legacy_backup_verify_all() ORDER BY 1;

\echo '== Recovery: a bad bulk UPDATE wrecks the categorization; a partner restores it from the snapshot'
SELECT snapshot_id AS good_snapshot FROM legacy_snapshots WHERE session_id = 'demo-session' ORDER BY snapshot_at DESC LIMIT 1 \gset
UPDATE extracted_documents SET category_id = 'demo-session-cat-001', status = 'Categorized', updated_at = now() WHERE session_id = 'demo-session';
SELECT r->'changes' AS would_change, r->'missingDocuments' AS missing_documents, r->'mergedCategories' AS merged
FROM (SELECT legacy_restore_snapshot(:'good_snapshot', 'u-partner') AS r) x;
SELECT r->'changes' AS restored FROM (SELECT legacy_restore_snapshot(:'good_snapshot', 'u-partner', dry_run => false) AS r) x;
SELECT json_array_length(legacy_snapshot('demo-session')->'consistency') AS counters_out_of_line,
       legacy_snapshot('demo-session')->'stats' AS stats;
SELECT legacy_snapshot_verify(:'good_snapshot')->>'result' AS backup_in_r2;

-- docs/application.md, replayed: the SQL of every snippet of the application developer's guide,
-- under its marker (-- replay: NAME), with concrete values for the ${…} bind parameters, run as
-- the application's role where the application sends it, followed by what the TypeScript reads.
-- tests/docs/check_application_guide.py checks that the SQL here is the guide's.
\set VERBOSITY default
\set ECHO none
\i tests/fixtures/app_workload.sql
\set docs 100
\set cats 3
\set months 2
\set sid guide-1
\i tests/fixtures/seed.sql
\set sid guide-2
\i tests/fixtures/seed.sql
\set sid guide-3
\i tests/fixtures/seed.sql
\set sid guide-4
\i tests/fixtures/seed.sql
\set sid guide-5
\i tests/fixtures/seed.sql
\set ECHO all
INSERT INTO users (id, firm_id, email, first_name, last_name, role, status, azure_ad_id) VALUES
  ('u-guide-owner', 'firm-1', 'guide-owner@firm.test', 'Gus', 'Owner', 'BusinessOwner', 'Active', 'aad-guide-owner'),
  ('u-guide-new', 'firm-1', 'guide-new@firm.test', 'Nina', 'New', 'Paralegal', 'Active', 'aad-guide-new')
ON CONFLICT (id) DO NOTHING;
-- The application's role: the real one owns its tables; here it gets the same rights on them.
CREATE ROLE guide_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON legacy_import_sessions, extracted_documents, import_categories,
      document_batches, legacy_import_audit_logs, users TO guide_app;
GRANT USAGE ON SCHEMA regress TO guide_app;

-- replay: grant-operator
GRANT legacy_backup_operator TO guide_app;
SELECT pg_has_role('guide_app', 'legacy_backup_operator', 'USAGE') AS operator,
       pg_has_role('guide_app', 'legacy_backup_reader', 'USAGE') AS reader,
       pg_has_role('guide_app', 'legacy_backup_admin', 'USAGE') AS admin;
-- From here on the application's statements run as the application's role.
SET SESSION AUTHORIZATION guide_app;

-- replay: categorize-doc
SELECT coalesce(max(id), 0) AS last_log_id FROM category_assignment_logs \gset
BEGIN;
SELECT set_config('legacy_backup.actor', 'u-paralegal', true);
-- (the ORM's update and counter updates, as tests/fixtures/app_workload.sql replays them)
SELECT app_categorize('guide-1-doc-000070', 'guide-1-cat-002', 'u-paralegal');
COMMIT;
SELECT document_id, old_status, new_status, new_category_id, changed_by, attribution, db_role, source
FROM category_assignment_logs WHERE id > :last_log_id ORDER BY id;
-- SET LOCAL with a bind parameter, as Prisma would send it, is a syntax error.
DO $$ BEGIN EXECUTE 'SET LOCAL legacy_backup.actor = $1' USING 'u-paralegal'; EXCEPTION WHEN others THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END $$;
-- The AI pipeline's writes log nothing.
SELECT max(id) AS last_log_id FROM category_assignment_logs \gset
SELECT app_extract_text('guide-1-doc-000071', repeat('text ', 1000));
SELECT app_set_cluster('guide-1', '0b7c7d7e-0000-4000-8000-000000000001', ARRAY['guide-1-doc-000071', 'guide-1-doc-000072']) AS clustered;
SELECT app_mark_skip_reason(ARRAY['guide-1-doc-000073'], 'Scanned') AS marked;
SELECT app_triage('guide-1-doc-000074', 'ThirdParty', 0.9, 'letterhead');
SELECT app_validate(ARRAY['guide-1-doc-000075'], 'Accepted', 'u-partner') AS validated;
SELECT count(*) AS logged_by_pipeline FROM category_assignment_logs WHERE id > :last_log_id;

-- replay: merge-categories
SELECT max(id) AS last_log_id FROM category_assignment_logs \gset
BEGIN;
SELECT set_config('legacy_backup.actor', 'u-partner', true);
-- (updateMany, then the counters, merged_into and the CATEGORIES_MERGED row, as app_merge does)
SELECT app_merge('guide-1', 'guide-1-cat-001', ARRAY['guide-1-cat-002'], 'u-partner') AS moved;
COMMIT;
SELECT count(*) AS logged, count(DISTINCT txid) AS transactions, min(changed_by) AS changed_by,
       min(attribution) AS attribution, min(old_category_id) AS from_category, min(new_category_id) AS to_category
FROM category_assignment_logs WHERE id > :last_log_id;

-- replay: undo
-- The whole merge, undone as one (no document named).
SELECT result->'bulk' AS bulk, result->'undoneChanges' AS undone_changes, result->>'sessionId' AS session_id,
       result->>'actorId' AS actor_id, jsonb_array_length(result->'documents') AS documents
FROM (SELECT legacy_undo_last_categorization('u-partner', NULL::text) AS result) x;
SELECT category_id, count(*) FROM extracted_documents WHERE session_id = 'guide-1' AND category_id IS NOT NULL GROUP BY 1 ORDER BY 1;
SELECT merged_into FROM import_categories WHERE id = 'guide-1-cat-002';
-- One document: the associate re-categorizes the paralegal's document; the paralegal's undo of it
-- is then refused (55006), the associate's own goes through.
BEGIN;
SELECT set_config('legacy_backup.actor', 'u-associate', true);
SELECT app_categorize('guide-1-doc-000070', 'guide-1-cat-003', 'u-associate');
COMMIT;
SELECT code, message FROM regress.error_of($$SELECT legacy_undo_last_categorization('u-paralegal', 'guide-1-doc-000070'::text) AS result$$);
SELECT result->'bulk' AS bulk, result->'documents' AS documents
FROM (SELECT legacy_undo_last_categorization('u-associate', 'guide-1-doc-000070'::text) AS result) x;
-- Nothing to undo: P0002.
SELECT code, message FROM regress.error_of($$SELECT legacy_undo_last_categorization('u-guide-new', NULL::text) AS result$$);

-- replay: export-snapshot
SELECT snapshot->'stats' AS stats, snapshot->>'snapshotKey' LIKE 'backups/guide-1/categorization-____-__-__T__-__-__-___Z.json' AS key_ok,
       snapshot->'consistencyIssues' AS consistency_issues, snapshot ?& ARRAY['snapshotId', 'snapshotAt', 'sha256', 'bytes'] AS has_ids
FROM (SELECT legacy_snapshot_take('guide-1', 'u-partner') AS snapshot) x;
SELECT action, user_id, details->'stats'->'totalDocuments' AS total_documents
FROM legacy_import_audit_logs WHERE session_id = 'guide-1' AND action = 'CATEGORIZATION_SNAPSHOT';
SELECT last_snapshot_at IS NOT NULL AS last_snapshot_at_set FROM legacy_import_sessions WHERE id = 'guide-1';
-- The stored snapshot: format 2, stats under the application's names first.
SELECT legacy_snapshot('guide-1')->'formatVersion' AS format_version, legacy_snapshot('guide-1')->'stats' AS stats;

-- replay: dashboard-readiness
SELECT readiness->>'code' AS code, readiness->'ready' AS ready, readiness->'changesSinceSnapshot' AS changes,
       readiness->'snapshotUploaded' AS uploaded, readiness->'exportBegunAt' AS export_begun_at
FROM (SELECT legacy_export_readiness('guide-1') AS readiness) x;
-- Every field the guide's ExportReadiness type names, and no other.
SELECT string_agg(k, ', ' ORDER BY k) AS fields FROM jsonb_object_keys(legacy_export_readiness('guide-1')) k;
SELECT app_categorize('guide-1-doc-000080', 'guide-1-cat-001', 'u-paralegal');
SELECT readiness->>'code' AS code, readiness->'changesSinceSnapshot' AS changes, readiness->>'hint' AS hint
FROM (SELECT legacy_export_readiness('guide-1') AS readiness) x;
-- (What prisma.legacySnapshot.findMany({ where: { sessionId }, orderBy: { snapshotAt: 'desc' }, take: 10 }) reads.)
SELECT session_id, taken_by, documents, categorized, upload_state, body_in_database, snapshot_key LIKE 'backups/guide-1/%' AS key_ok
FROM legacy_snapshots WHERE session_id = 'guide-1' ORDER BY snapshot_at DESC LIMIT 10;

-- replay: export-begin
SELECT verdict->>'code' AS code, verdict->'ready' AS ready, verdict->>'exportBegunAt' IS NOT NULL AS begun,
       verdict->>'snapshotId' IS NOT NULL AS has_snapshot
FROM (SELECT legacy_export_begin('guide-2', 'u-partner') AS verdict) x;
SELECT action, user_id, details->'snapshotTaken' AS snapshot_taken FROM legacy_import_audit_logs
WHERE session_id = 'guide-2' AND action IN ('CATEGORIZATION_SNAPSHOT', 'EXPORT_BEGUN') ORDER BY "timestamp", action;
-- The upload takes longer than legacy_backup.max_snapshot_age (a superuser setting).
RESET SESSION AUTHORIZATION;
SET legacy_backup.max_snapshot_age = '1s';
SET SESSION AUTHORIZATION guide_app;
SELECT pg_sleep(1.2);
SELECT readiness->>'code' AS code, readiness->>'exportBegunAt' IS NOT NULL AS begun
FROM (SELECT legacy_export_readiness('guide-2') AS readiness) x;

-- replay: export-finish
BEGIN;
SELECT set_config('legacy_backup.actor', 'u-partner', true);
UPDATE legacy_import_sessions SET status = 'Exported', exported_at = now(), updated_at = now() WHERE id = 'guide-2';
-- (tx.legacyImportAuditLog.create)
INSERT INTO legacy_import_audit_logs (id, session_id, user_id, action, details)
VALUES (gen_random_uuid()::text, 'guide-2', 'u-partner', 'EXPORT_COMPLETED', '{}');
COMMIT;
SELECT status, cleanup_scheduled_at - exported_at BETWEEN interval '7 days' AND interval '7 days 1 minute' AS cleanup_in_7_days
FROM legacy_import_sessions WHERE id = 'guide-2';
SELECT action, user_id, details->>'verdict' AS verdict, details->>'exportBegunAt' IS NOT NULL AS began
FROM legacy_import_audit_logs WHERE session_id = 'guide-2' AND action IN ('EXPORT_SNAPSHOT_VERIFIED', 'EXPORT_COMPLETED') ORDER BY action;
SELECT legacy_export_readiness('guide-2')->>'code' AS code;
-- The schedule is the extension's: a later change of it is refused.
SELECT code, message FROM regress.error_of($$UPDATE legacy_import_sessions SET cleanup_scheduled_at = now() + interval '30 days', updated_at = now() WHERE id = 'guide-2'$$);
-- A session whose export did not begin keeps the strict gate (here: stale, then no snapshot).
SELECT legacy_snapshot_take('guide-4', 'u-partner') IS NOT NULL AS taken;
SELECT pg_sleep(1.2);
SELECT code, regexp_replace(message, '[0-9.]+ minutes', 'N minutes') AS message
FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', exported_at = now(), updated_at = now() WHERE id = 'guide-4'$$);
SELECT code, message FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', exported_at = now(), updated_at = now() WHERE id = 'guide-5'$$);
RESET SESSION AUTHORIZATION;
RESET legacy_backup.max_snapshot_age;
SET SESSION AUTHORIZATION guide_app;
-- Categorization changed during the upload: LB003, and nothing changes.
SELECT legacy_export_begin('guide-3', 'u-partner')->>'code' AS code;
SELECT app_categorize('guide-3-doc-000090', 'guide-3-cat-001', 'u-paralegal');
SELECT code, regexp_replace(message, '[0-9.]+ minutes', 'N minutes') AS message
FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', exported_at = now(), updated_at = now() WHERE id = 'guide-3'$$);
SELECT status FROM legacy_import_sessions WHERE id = 'guide-3';
-- A snapshot taken during the upload (the dashboard's "Take snapshot") after such a change does
-- not help: the export is judged by the snapshot it began on, and the upload missed the change.
SELECT legacy_export_begin('guide-3', 'u-partner')->>'code' AS code;
SELECT app_categorize('guide-3-doc-000091', 'guide-3-cat-001', 'u-paralegal');
SELECT legacy_snapshot_take('guide-3', 'u-partner') IS NOT NULL AS taken;
SELECT readiness->>'code' AS code, readiness->>'exportBegunAt' IS NOT NULL AS export_under_way
FROM (SELECT legacy_export_readiness('guide-3') AS readiness) x;
SELECT code, message FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', exported_at = now(), updated_at = now() WHERE id = 'guide-3'$$);
SELECT status FROM legacy_import_sessions WHERE id = 'guide-3';
-- cleanup_scheduled_at set in the export statement itself: an earlier value is replaced.
SELECT legacy_export_begin('guide-4', 'u-partner')->>'code' AS code;
SELECT code, message FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', exported_at = now(), cleanup_scheduled_at = now() + interval '1 day', updated_at = now() WHERE id = 'guide-4'$$);
SELECT status, cleanup_scheduled_at - exported_at BETWEEN interval '7 days' AND interval '7 days 1 minute' AS cleanup_in_7_days
FROM legacy_import_sessions WHERE id = 'guide-4';

-- replay: postpone-cleanup
SELECT (now() + interval '30 days')::text AS until \gset
SELECT postponed->>'sessionId' AS session_id, postponed->>'actorId' AS actor_id,
       postponed->>'previousCleanupScheduledAt' IS NOT NULL AS had_schedule,
       (postponed->>'cleanupScheduledAt')::timestamptz = :'until'::timestamptz AS moved
FROM (SELECT legacy_postpone_cleanup('guide-2', 'u-partner', :'until'::timestamptz) AS postponed) x;
SELECT cleanup_scheduled_at = :'until'::timestamptz AS mirrored FROM legacy_import_sessions WHERE id = 'guide-2';
SELECT (now() + interval '31 days')::text AS until \gset
SELECT postponed->>'actorId' AS actor_id FROM (SELECT legacy_postpone_cleanup('guide-2', 'u-guide-owner', :'until'::timestamptz) AS postponed) x;
SELECT code, message FROM regress.error_of($$SELECT legacy_postpone_cleanup('guide-2', 'u-paralegal', (now() + interval '40 days')::text::timestamptz) AS postponed$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_postpone_cleanup('guide-2', 'u-partner', (now() + interval '2 days')::text::timestamptz) AS postponed$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_postpone_cleanup('guide-1', 'u-partner', (now() + interval '40 days')::text::timestamptz) AS postponed$$);

-- replay: cleanup-role
RESET SESSION AUTHORIZATION;
CREATE ROLE guide_cleanup LOGIN IN ROLE legacy_backup_admin;
GRANT USAGE ON SCHEMA regress TO guide_cleanup;

-- replay: cleanup-session
-- The application's own role may not call it.
SET SESSION AUTHORIZATION guide_app;
SELECT code, message FROM regress.error_of($$SELECT legacy_cleanup_session('guide-2', 'u-partner') AS preview$$);
RESET SESSION AUTHORIZATION;
-- The cleanup role: a partner, an exported session, but no snapshot in R2 yet (no worker here).
SET SESSION AUTHORIZATION guide_cleanup;
SELECT code, message, hint FROM regress.error_of($$SELECT legacy_cleanup_session('guide-2', 'u-partner') AS preview$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_cleanup_session('guide-2', 'u-partner', 'guide-2') AS result$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_cleanup_session('guide-2', 'u-paralegal') AS preview$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_cleanup_session('guide-1', 'u-partner') AS preview$$);
RESET SESSION AUTHORIZATION;
-- What /api/cleanup-session must no longer write: cleaned_up_at on an exported session. Only the
-- extension's cleanup may set it (LB004); the session stays for the worker to clean up.
SET SESSION AUTHORIZATION guide_app;
SELECT code, message FROM regress.error_of($$UPDATE legacy_import_sessions SET cleaned_up_at = now(), updated_at = now() WHERE id = 'guide-4'$$);
SELECT legacy_export_readiness('guide-4')->>'cleanedUpAt' IS NOT NULL AS marked_cleaned_up;
-- Deleting a session (/api/upload-pst): a final snapshot first, its documents' deletions
-- logged, its snapshots kept, its files scheduled for cleanup_delay after the delete; the manual
-- cleanup knows it (and waits for the final snapshot's upload).
SELECT count(*) AS snapshots_before FROM legacy_snapshots WHERE session_id = 'guide-2' \gset
DELETE FROM legacy_import_sessions WHERE id = 'guide-2';
SELECT count(*) AS deletions_logged FROM category_assignment_logs WHERE session_id = 'guide-2' AND new_status IS NULL;
SELECT count(*) - :snapshots_before AS final_snapshots FROM legacy_snapshots WHERE session_id = 'guide-2';
SELECT action, details->>'occasion' AS occasion FROM legacy_import_audit_logs
WHERE session_id = 'guide-2' AND (action = 'SESSION_DELETED' OR details->>'occasion' = 'sessionDeleted') ORDER BY action;
RESET SESSION AUTHORIZATION;
-- guide-2 was exported, its cleanup postponed: it keeps that schedule.
SELECT deleted_at IS NOT NULL AS deleted, scheduled_at = :'until'::timestamptz AS kept_its_schedule, cleaned_up_at
FROM legacy_backup.cleanup_schedule WHERE session_id = 'guide-2';
SET SESSION AUTHORIZATION guide_cleanup;
SELECT code, message FROM regress.error_of($$SELECT legacy_cleanup_session('guide-2', 'u-partner') AS preview$$);
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION guide_app;

-- replay: document-history
SELECT h.id ~ '^[0-9]+$' AS id_is_text, h.old_status, h.new_status, h.old_category_id, h.new_category_id, h.changed_by,
       h.attribution, h.source, h.txid ~ '^[0-9]+$' AS txid_is_text, h.undone_by IS NOT NULL AS undone
FROM (SELECT id::text AS id, old_category_id, new_category_id, old_status, new_status, changed_by, attribution, changed_at, source, txid::text AS txid, undone_by::text AS undone_by FROM category_assignment_logs WHERE document_id = 'guide-1-doc-000070' ORDER BY id) h;
RESET SESSION AUTHORIZATION;
-- The columns the guide's Prisma models map.
SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
WHERE table_schema = 'public' AND table_name IN ('legacy_snapshots', 'category_assignment_logs') ORDER BY table_name, ordinal_position;

DROP OWNED BY guide_app, guide_cleanup;
DROP ROLE guide_app;
DROP ROLE guide_cleanup;

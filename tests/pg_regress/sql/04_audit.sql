-- The audit trail: what the triggers log, attribution, baseline, history, point-in-time
-- reconstruction agreeing with snapshots, session activity, and undo.
\set VERBOSITY default
\set ECHO none
\i tests/fixtures/app_workload.sql
\set sid aud
\set docs 100
\set cats 4
\set months 2
\i tests/fixtures/seed.sql
\set ECHO all
SELECT app_recount('aud');

-- Documents inserted already categorized or skipped were logged at insert; the others were not.
SELECT source, attribution, new_status, count(*) FROM category_assignment_logs
WHERE session_id = 'aud' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- Attaching again records a baseline only for documents without history.
SELECT step, object, outcome FROM legacy_backup_attach() WHERE step IN ('trigger', 'baseline');
SELECT source, count(*) FROM category_assignment_logs WHERE session_id = 'aud' GROUP BY 1 ORDER BY 1;
SELECT step, outcome FROM legacy_backup_attach() WHERE step = 'baseline';

CREATE TEMP TABLE marks (label text PRIMARY KEY, snapshot json);
INSERT INTO marks SELECT 'start', legacy_snapshot('aud');

-- 1. Categorize with legacy_backup.actor set: attribution 'setting'.
BEGIN;
SET LOCAL legacy_backup.actor = 'u-associate';
SELECT app_categorize('aud-doc-999999', 'aud-cat-002', 'u-associate');
SELECT app_categorize('aud-doc-000066', 'aud-cat-002', 'u-associate');
COMMIT;
-- (aud-doc-999999 does not exist: nothing happens, nothing is logged.)
-- 2. Without the setting, categorized_by set by the statement: attribution 'categorized_by'.
SELECT app_categorize('aud-doc-000067', 'aud-cat-003', 'u-paralegal');
SELECT app_skip('aud-doc-000068', 'u-paralegal');
INSERT INTO marks SELECT 'after categorize', legacy_snapshot('aud');

-- 3. Statements that change nothing log nothing: same category again, and other columns.
SELECT count(*) AS rows_before FROM category_assignment_logs WHERE session_id = 'aud' \gset
UPDATE extracted_documents SET category_id = category_id, updated_at = now() WHERE session_id = 'aud';
UPDATE extracted_documents SET email_subject = email_subject || '' WHERE session_id = 'aud';
SELECT count(*) - :rows_before AS rows_logged_by_noop_updates FROM category_assignment_logs WHERE session_id = 'aud';

-- 4. A rolled-back change leaves no log row.
BEGIN;
SELECT app_categorize('aud-doc-000069', 'aud-cat-001', 'u-paralegal');
ROLLBACK;
SELECT count(*) AS rows_for_rolled_back_change FROM category_assignment_logs WHERE document_id = 'aud-doc-000069' AND source = 'app';

-- 5. A merge that leaves categorized_by alone and sets no actor is credited to the database role,
--    never to the original categorizer.
SELECT app_merge('aud', 'aud-cat-001', ARRAY['aud-cat-004'], 'u-partner') AS moved;
SELECT changed_by, attribution, count(*) FROM category_assignment_logs
WHERE session_id = 'aud' AND new_category_id = 'aud-cat-001' AND old_category_id = 'aud-cat-004' GROUP BY 1, 2;
INSERT INTO marks SELECT 'after merge by role', legacy_snapshot('aud');

-- 6. The same kind of merge with the application's SET LOCAL, to be undone below.
BEGIN;
SET LOCAL legacy_backup.actor = 'u-partner';
SELECT app_merge('aud', 'aud-cat-002', ARRAY['aud-cat-003'], 'u-partner') AS moved;
COMMIT;
INSERT INTO marks SELECT 'after merge by partner', legacy_snapshot('aud');

-- History of one document, oldest first.
SELECT old_category_id, new_category_id, old_status, new_status, changed_by, attribution, source
FROM legacy_document_history('aud-doc-000067');

-- Who did what, for a partner's review.
SELECT changed_by, name, source, documents, changes FROM legacy_session_activity('aud');

-- Undo: the partner's last change was the merge (one transaction): every moved document returns,
-- counters move back, and the merged-away category is no longer marked merged.
SELECT jsonb_build_object('bulk', r->'bulk', 'undone', r->'undoneChanges', 'documents', jsonb_array_length(r->'documents')) AS undo
FROM (SELECT legacy_undo_last_categorization('u-partner') AS r) x;
SELECT id, document_count, merged_into FROM import_categories WHERE session_id = 'aud' ORDER BY id;
SELECT json_array_length(legacy_snapshot('aud')->'consistency') = json_array_length(m.snapshot->'consistency') AS counters_as_before_merge
FROM marks m WHERE label = 'after merge by role';
SELECT action, user_id, details->'bulk' AS bulk, details->'documents' AS documents FROM legacy_import_audit_logs WHERE action = 'CATEGORIZATION_UNDONE';
INSERT INTO marks SELECT 'after undo of merge', legacy_snapshot('aud');

-- Repeated undo walks further back: the partner's previous change was the role-credited merge,
-- which is not theirs, so there is nothing left.
SELECT * FROM regress.error_of($$SELECT legacy_undo_last_categorization('u-partner')$$);

-- Undo of one document: u-paralegal skipped 068 last, and categorized 067 before that. (The
-- partner's merge moved 067 too, but was undone: an undone change and its undo cancel out.)
SELECT r->'documents' AS restored FROM (SELECT legacy_undo_last_categorization('u-paralegal', 'aud-doc-000068') AS r) x;
SELECT r->'documents' AS restored FROM (SELECT legacy_undo_last_categorization('u-paralegal') AS r) x;
SELECT code, message FROM regress.error_of($$SELECT legacy_undo_last_categorization('u-paralegal')$$);
SELECT id, status, category_id, categorized_by FROM extracted_documents WHERE id IN ('aud-doc-000067', 'aud-doc-000068') ORDER BY id;
INSERT INTO marks SELECT 'after undos', legacy_snapshot('aud');

-- Refused: someone else changed the document since.
BEGIN;
SET LOCAL legacy_backup.actor = 'u-associate';
SELECT app_categorize('aud-doc-000070', 'aud-cat-001', 'u-associate');
COMMIT;
SELECT app_categorize('aud-doc-000070', 'aud-cat-002', 'u-paralegal');
SELECT code, message FROM regress.error_of($$SELECT legacy_undo_last_categorization('u-associate')$$);
SELECT status, category_id FROM extracted_documents WHERE id = 'aud-doc-000070';

-- Refused: outside the undo window.
SET legacy_backup.undo_window = '1s';
SELECT pg_sleep(1.2);
SELECT code, message FROM regress.error_of($$SELECT legacy_undo_last_categorization('u-paralegal')$$);
RESET legacy_backup.undo_window;

-- Bad input: a clear error, nothing changed.
SELECT count(*) AS rows_before FROM category_assignment_logs \gset
SELECT * FROM regress.error_of($$SELECT legacy_undo_last_categorization(NULL)$$);
SELECT * FROM regress.error_of($$SELECT legacy_undo_last_categorization('')$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_undo_last_categorization('../x')$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_undo_last_categorization('u-paralegal', 'a/b')$$);
SELECT * FROM regress.error_of($$SELECT legacy_undo_last_categorization('nobody')$$);
SELECT * FROM regress.error_of($$SELECT * FROM legacy_document_history(NULL)$$);
SELECT * FROM regress.error_of($$SELECT * FROM legacy_document_history('no-such-doc')$$);
SELECT * FROM regress.error_of($$SELECT * FROM legacy_categorization_at('aud', NULL)$$);
SELECT * FROM regress.error_of($$SELECT * FROM legacy_categorization_at('aud', 'infinity')$$);
SELECT * FROM regress.error_of($$SELECT * FROM legacy_categorization_at('no-such-session', now())$$);
SELECT count(*) - :rows_before AS rows_added_by_bad_input FROM category_assignment_logs;

-- Settings: durations in PostgreSQL's notation, checked; change_source is superuser-only.
SELECT * FROM regress.error_of($$SET legacy_backup.undo_window = 'banana'$$);
SELECT * FROM regress.error_of($$SET legacy_backup.undo_window = '-1 hour'$$);
SELECT * FROM regress.error_of($$SET legacy_backup.undo_window = '1000 days'$$);
SET legacy_backup.undo_window = '7 days';
SHOW legacy_backup.undo_window;
RESET legacy_backup.undo_window;
CREATE ROLE lb_app_user;
SET ROLE lb_app_user;
SET legacy_backup.change_source = 'undo';
RESET ROLE;
DROP ROLE lb_app_user;

-- Point in time: at every mark, the reconstruction equals the snapshot taken then,
-- document for document (category and status).
SELECT m.label, json_array_length(m.snapshot->'documents') AS documents,
       (SELECT count(*)
        FROM (SELECT d->>'id' AS id, d->>'categoryId' AS category_id, d->>'status' AS status
              FROM json_array_elements(m.snapshot->'documents') d) s
        FULL JOIN legacy_categorization_at('aud', (m.snapshot->>'snapshotAt')::timestamptz) a ON a.document_id = s.id
        WHERE s.id IS NULL OR a.document_id IS NULL
           OR s.category_id IS DISTINCT FROM a.category_id OR s.status IS DISTINCT FROM a.status) AS differences
FROM marks m ORDER BY (m.snapshot->>'snapshotAt')::timestamptz;

-- Deleting documents logs them, so they still appear as they were before the delete.
SELECT now() AS before_delete \gset
DELETE FROM extracted_documents WHERE id = 'aud-doc-000001';
SELECT new_status IS NULL AS logged_as_deleted, old_status FROM category_assignment_logs WHERE document_id = 'aud-doc-000001' ORDER BY id DESC LIMIT 1;
SELECT count(*) AS present_before_delete FROM legacy_categorization_at('aud', :'before_delete') WHERE document_id = 'aud-doc-000001';
SELECT count(*) AS present_after_delete FROM legacy_categorization_at('aud', now()) WHERE document_id = 'aud-doc-000001';

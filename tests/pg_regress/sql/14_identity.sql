-- What is protected has a fixed identity (0.5.0): a document keeps its session, whatever moves
-- it; categories are logged and are part of what the export gate compares with the snapshot; a
-- snapshot's document rows are checked against the session's rows counted apart.
\set VERBOSITY default
\set ECHO none
\set sid ident-a
\set docs 12
\set cats 3
\set months 1
\i tests/fixtures/seed.sql
\set sid ident-b
\i tests/fixtures/seed.sql
\set ECHO all

-- 1. A document cannot move to another session: not by the statement ...
SELECT code, message FROM regress.error_of($$
    UPDATE extracted_documents SET session_id = 'ident-b' WHERE id = (SELECT min(id) FROM extracted_documents WHERE session_id = 'ident-a')$$);
-- ... nor by a BEFORE trigger of the application on an UPDATE naming neither column.
CREATE FUNCTION regress.move_document() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.session_id := 'ident-b'; RETURN NEW; END $$;
CREATE TRIGGER app_moves_documents BEFORE UPDATE ON extracted_documents
    FOR EACH ROW WHEN (NEW.email_subject = 'move me') EXECUTE FUNCTION regress.move_document();
SELECT code, message FROM regress.error_of($$
    UPDATE extracted_documents SET email_subject = 'move me' WHERE id = (SELECT min(id) FROM extracted_documents WHERE session_id = 'ident-a')$$);
DROP TRIGGER app_moves_documents ON extracted_documents;
SELECT count(*) AS documents_of_a FROM extracted_documents WHERE session_id = 'ident-a';
-- Its id stays fixed as before.
SELECT code FROM regress.error_of($$
    UPDATE extracted_documents SET id = id || 'x' WHERE id = (SELECT min(id) FROM extracted_documents WHERE session_id = 'ident-a')$$);
-- The application's own updates of other columns pass.
UPDATE extracted_documents SET email_subject = email_subject WHERE session_id = 'ident-a';

-- 2. Categories: a counter update is not logged; creation, rename, merge and deletion are.
SELECT count(*) AS category_log_rows FROM category_change_logs WHERE session_id = 'ident-a';
UPDATE import_categories SET document_count = document_count + 1, updated_at = now() WHERE session_id = 'ident-a';
SELECT count(*) AS after_counter_update FROM category_change_logs WHERE session_id = 'ident-a';
-- A fresh snapshot makes the session ready ...
SELECT legacy_snapshot_take('ident-a', 'u-partner')->>'snapshotKey' LIKE 'backups/ident-a/%' AS snapshot_taken;
SELECT legacy_export_readiness('ident-a')->>'code' AS verdict;
-- ... a rename since then makes it outdated.
BEGIN;
SET LOCAL legacy_backup.actor = 'u-partner';
UPDATE import_categories SET name = name || ' (renamed)', updated_at = now() WHERE id = 'ident-a-cat-001';
COMMIT;
SELECT legacy_export_readiness('ident-a')->>'code' AS verdict;
SELECT code FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'ident-a'$$);
-- A merge likewise, after a new snapshot.
SELECT legacy_snapshot_take('ident-a', 'u-partner')->>'snapshotKey' LIKE 'backups/ident-a/%' AS snapshot_taken;
SELECT legacy_export_readiness('ident-a')->>'code' AS verdict;
UPDATE import_categories SET merged_into = 'ident-a-cat-002', updated_at = now() WHERE id = 'ident-a-cat-003';
SELECT legacy_export_readiness('ident-a')->>'code' AS verdict;
-- A new category, then its deletion.
SELECT legacy_snapshot_take('ident-a', 'u-partner')->>'snapshotKey' LIKE 'backups/ident-a/%' AS snapshot_taken;
INSERT INTO import_categories (id, session_id, name, created_by, updated_at)
VALUES ('ident-a-cat-new', 'ident-a', 'New one', 'u-partner', now());
SELECT legacy_export_readiness('ident-a')->>'code' AS verdict;
DELETE FROM import_categories WHERE id = 'ident-a-cat-new';
SELECT category_id, change, old_name, new_name, old_merged_into, new_merged_into, changed_by, db_role
FROM category_change_logs WHERE session_id = 'ident-a' ORDER BY id;
-- The other session's gate is untouched by all of it.
SELECT count(*) AS rows_of_b FROM category_change_logs WHERE session_id = 'ident-b';
-- TRUNCATE of the categories is refused like that of the documents.
SELECT code FROM regress.error_of($$TRUNCATE import_categories CASCADE$$);
-- The application cannot write the log itself.
CREATE ROLE regress_identity_app;
GRANT USAGE ON SCHEMA regress TO regress_identity_app;
SET ROLE regress_identity_app;
SELECT code FROM regress.error_of($$INSERT INTO category_change_logs (session_id, category_id, change, changed_by, db_role) VALUES ('x', 'y', 'created', 'z', 'w')$$);
RESET ROLE;
REVOKE USAGE ON SCHEMA regress FROM regress_identity_app;
DROP ROLE regress_identity_app;

-- 3. The snapshot reads the session's rows, all of them, counted apart in the same statement.
SELECT (legacy_snapshot('ident-b')::jsonb->'stats'->>'totalDocuments')::int
       = (SELECT count(*) FROM extracted_documents WHERE session_id = 'ident-b') AS complete;

-- 4. Privileged reads pin their settings for the call only: the caller's are back afterwards.
BEGIN;
SET LOCAL row_security = on;
SET LOCAL constraint_exclusion = on;
SELECT legacy_export_readiness('ident-b')->>'code' IS NOT NULL AS answered;
SELECT (legacy_snapshot('ident-b')::jsonb->>'sessionId') AS snapshot_of;
SELECT current_setting('row_security') AS row_security, current_setting('constraint_exclusion') AS constraint_exclusion;
COMMIT;

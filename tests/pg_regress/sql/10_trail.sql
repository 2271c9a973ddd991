-- The audit trail's UPDATE path (src/audit_trail.rs): a filtered row trigger buffers changed
-- documents and a statement trigger writes them. Writes that touch neither category nor status
-- (the AI pipeline's: text, embeddings, clusters, skip reasons, triage, validation) log
-- nothing; bulk changes are logged in full, once; buffered rows of a failed subtransaction
-- are dropped; a change no flush wrote is refused at commit; the functions cannot be borrowed.
\set VERBOSITY default
\set ECHO none
\i tests/fixtures/app_workload.sql
\set sid trl
\set docs 40
\set cats 3
\set months 2
\i tests/fixtures/seed.sql
\set ECHO all
SELECT count(*) AS baseline_rows FROM category_assignment_logs WHERE session_id = 'trl' \gset

-- 1. The AI pipeline's writes: text, metadata, the whole session in one statement. Nothing logged.
UPDATE extracted_documents SET extracted_text = repeat('lorem ipsum ', 2000), primary_language = 'en'
WHERE id = 'trl-doc-000001';
UPDATE extracted_documents SET ai_metadata = '{"cluster": 7}', document_type = 'letter' WHERE session_id = 'trl';
UPDATE extracted_documents SET category_id = category_id, status = status WHERE session_id = 'trl';
-- The pipeline's own write paths (tests/fixtures/app_workload.sql), as the application sends them.
SELECT app_extract_text('trl-doc-000002', repeat('extracted words ', 1500));
SELECT app_embed('trl-doc-000002', array_fill(0.5::real, ARRAY[1536]));
SELECT app_set_cluster('trl', '7d7a1c52-5f7e-4c55-9a3b-2f6c0b1d9e01', (SELECT array_agg(id) FROM extracted_documents WHERE session_id = 'trl')) AS clustered;
SELECT app_mark_skip_reason((SELECT array_agg(id) FROM extracted_documents WHERE session_id = 'trl' AND id LIKE '%0'), 'Scanned') AS marked;
SELECT app_triage('trl-doc-000003', 'FirmDrafted', 0.91, 'letterhead');
SELECT app_validate(ARRAY['trl-doc-000004', 'trl-doc-000005'], 'Deleted', 'u-partner') AS validated;
SELECT count(*) - :baseline_rows AS logged_by_pipeline_writes FROM category_assignment_logs WHERE session_id = 'trl';

-- 2. A bulk merge: every moved document logged once, in one transaction, with its old category.
BEGIN;
SET LOCAL legacy_backup.actor = 'u-partner';
UPDATE extracted_documents SET category_id = 'trl-cat-001'
WHERE session_id = 'trl' AND category_id IN ('trl-cat-002', 'trl-cat-003');
SELECT count(*) AS moved FROM extracted_documents WHERE session_id = 'trl' AND category_id = 'trl-cat-001';
COMMIT;
SELECT count(*) AS logged, count(DISTINCT txid) AS transactions, count(DISTINCT document_id) AS documents,
       string_agg(DISTINCT old_category_id, ',' ORDER BY old_category_id) AS from_categories,
       string_agg(DISTINCT changed_by || '/' || attribution || '/' || source, ',') AS who
FROM category_assignment_logs WHERE session_id = 'trl' AND new_category_id = 'trl-cat-001' AND old_category_id <> 'trl-cat-001';

-- 3. Rows buffered in a subtransaction that fails are dropped with it: only the second
-- statement's document is logged. (An application trigger fails on one row after the trail
-- buffered the first.)
CREATE FUNCTION regress.refuse_doc_2() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = 'trl-doc-000002' THEN RAISE EXCEPTION 'application trigger refuses %', NEW.id; END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_refuse_doc_2 AFTER UPDATE ON extracted_documents FOR EACH ROW EXECUTE FUNCTION regress.refuse_doc_2();
SELECT max(id) AS last_log_id FROM category_assignment_logs \gset
DO $$
BEGIN
    BEGIN
        UPDATE extracted_documents SET category_id = 'trl-cat-003' WHERE id IN ('trl-doc-000001', 'trl-doc-000002');
    EXCEPTION WHEN raise_exception THEN
        RAISE NOTICE 'caught: %', SQLERRM;
    END;
    UPDATE extracted_documents SET category_id = 'trl-cat-003' WHERE id = 'trl-doc-000003';
END $$;
SELECT document_id, new_category_id FROM category_assignment_logs WHERE id > :last_log_id ORDER BY id;
DROP TRIGGER zz_refuse_doc_2 ON extracted_documents;

-- 4. A BEFORE trigger that changes the category on an UPDATE naming neither category_id nor
-- status: no flush fires for that statement, so the commit is refused and nothing changes.
CREATE FUNCTION regress.recategorize() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.document_type = 'recategorize' THEN NEW.category_id := 'trl-cat-002'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER aa_recategorize BEFORE UPDATE ON extracted_documents FOR EACH ROW EXECUTE FUNCTION regress.recategorize();
-- (The refusal comes at commit, after the statement: SQLSTATE 55000.)
UPDATE extracted_documents SET document_type = 'recategorize' WHERE id = 'trl-doc-000004';
SELECT category_id, document_type FROM extracted_documents WHERE id = 'trl-doc-000004';
-- Naming the column makes the same change logged.
UPDATE extracted_documents SET document_type = 'recategorize', status = status WHERE id = 'trl-doc-000004';
SELECT new_category_id, changed_by LIKE 'pg:%' AS by_role FROM category_assignment_logs WHERE document_id = 'trl-doc-000004' ORDER BY id DESC LIMIT 1;
DROP TRIGGER aa_recategorize ON extracted_documents;

-- 5. A document's id cannot change (its history hangs on it).
SELECT code, message FROM regress.error_of($$UPDATE extracted_documents SET id = 'trl-doc-x' WHERE id = 'trl-doc-000005'$$);

-- 6. The trail's functions work only in the extension's own triggers on extracted_documents.
CREATE TABLE regress.fake_documents (LIKE extracted_documents);
SELECT code, message FROM regress.error_of($$CREATE TRIGGER borrow AFTER UPDATE ON regress.fake_documents FOR EACH ROW EXECUTE FUNCTION legacy_backup_log_change()$$);
SELECT code, message FROM regress.error_of($$CREATE TRIGGER borrow AFTER UPDATE ON regress.fake_documents FOR EACH STATEMENT EXECUTE FUNCTION legacy_backup_log_flush()$$);
DROP TABLE regress.fake_documents;

-- 7. More changed rows than one batch holds (10,000): all logged.
INSERT INTO extracted_documents (id, session_id, file_name, file_extension, file_size_bytes, storage_path, folder_path, updated_at)
SELECT 'trl-big-' || g, 'trl', 'f' || g, 'pdf', 1, 'documents/trl/' || g, 'Inbox', now() FROM generate_series(1, 10050) g;
SELECT max(id) AS last_log_id FROM category_assignment_logs \gset
UPDATE extracted_documents SET category_id = 'trl-cat-001', status = 'Categorized' WHERE id LIKE 'trl-big-%';
SELECT count(*) AS logged, count(DISTINCT document_id) AS documents FROM category_assignment_logs WHERE id > :last_log_id;
DELETE FROM extracted_documents WHERE id LIKE 'trl-big-%';

-- 8. One changed document is written straight into the log (src/direct_insert.rs), several
-- through the prepared INSERT: the rows are the same, column for column, defaults included.
BEGIN;
SET LOCAL legacy_backup.actor = 'u-direct';
SELECT max(id) AS last_log_id FROM category_assignment_logs \gset
UPDATE extracted_documents SET category_id = 'trl-cat-003', status = 'Categorized', categorized_by = 'u-direct', categorized_at = '2026-01-02 03:04:05+00' WHERE id = 'trl-doc-000011';
UPDATE extracted_documents SET category_id = 'trl-cat-003', status = 'Categorized', categorized_by = 'u-direct', categorized_at = '2026-01-02 03:04:05+00' WHERE id IN ('trl-doc-000012', 'trl-doc-000013');
SELECT l.document_id, l.old_status IS NOT NULL AS has_old_status, l.new_category_id, l.new_status, l.new_categorized_by,
       l.new_categorized_at, l.changed_by, l.attribution, l.source, l.db_role = session_user AS db_role_ok,
       l.txid = pg_current_xact_id() AS this_transaction, l.changed_at IS NOT NULL AS timed, l.undone_by
FROM category_assignment_logs l WHERE l.id > :last_log_id ORDER BY l.id;
SELECT count(DISTINCT id) = 3 AND min(id) > :last_log_id AS ids_from_the_identity FROM category_assignment_logs WHERE id > :last_log_id;
COMMIT;

-- The table's own rules hold on that path, and a change to them is seen by the next write in
-- the same session: a CHECK constraint added to the log refuses the row (and the change with
-- it); a new column default is taken (on both paths); with an INSERT trigger on the log the row
-- goes through the prepared INSERT, so the trigger fires; so does a rule.
SET legacy_backup.allow_drop = on;
ALTER TABLE category_assignment_logs ADD CONSTRAINT regress_no_mallory CHECK (changed_by <> 'mallory');
BEGIN;
SET LOCAL legacy_backup.actor = 'mallory';
SELECT code, message FROM regress.error_of($$UPDATE extracted_documents SET category_id = 'trl-cat-001' WHERE id = 'trl-doc-000011'$$);
ROLLBACK;
SELECT category_id FROM extracted_documents WHERE id = 'trl-doc-000011';
ALTER TABLE category_assignment_logs DROP CONSTRAINT regress_no_mallory;
ALTER TABLE category_assignment_logs ALTER COLUMN changed_at SET DEFAULT '2001-02-03 04:05:06+00';
BEGIN;
SET LOCAL legacy_backup.actor = 'mallory';
UPDATE extracted_documents SET category_id = 'trl-cat-001' WHERE id = 'trl-doc-000011';
UPDATE extracted_documents SET category_id = 'trl-cat-001' WHERE id IN ('trl-doc-000012', 'trl-doc-000013');
SELECT document_id, changed_by, changed_at FROM category_assignment_logs WHERE changed_by = 'mallory' ORDER BY id;
ROLLBACK;
ALTER TABLE category_assignment_logs ALTER COLUMN changed_at SET DEFAULT clock_timestamp();
CREATE TABLE regress.log_copies (document_id text);
CREATE FUNCTION regress.copy_log_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO regress.log_copies VALUES (NEW.document_id); RETURN NEW; END $$;
CREATE TRIGGER regress_copy AFTER INSERT ON category_assignment_logs FOR EACH ROW EXECUTE FUNCTION regress.copy_log_row();
UPDATE extracted_documents SET category_id = 'trl-cat-002' WHERE id = 'trl-doc-000011';
SELECT document_id FROM regress.log_copies;
DROP TRIGGER regress_copy ON category_assignment_logs;
UPDATE extracted_documents SET category_id = 'trl-cat-001' WHERE id = 'trl-doc-000011';
SELECT count(*) AS copies_after_the_trigger_was_dropped FROM regress.log_copies;
CREATE RULE regress_copy_rule AS ON INSERT TO category_assignment_logs DO ALSO INSERT INTO regress.log_copies VALUES (NEW.document_id);
UPDATE extracted_documents SET category_id = 'trl-cat-003' WHERE id = 'trl-doc-000011';
SELECT count(*) AS copies_with_a_rule FROM regress.log_copies;
DROP RULE regress_copy_rule ON category_assignment_logs;
DROP TABLE regress.log_copies;
DROP FUNCTION regress.copy_log_row();
RESET legacy_backup.allow_drop;
SELECT pg_get_expr(adbin, adrelid) AS changed_at_default FROM pg_attrdef WHERE adrelid = 'category_assignment_logs'::regclass AND adnum = (SELECT attnum FROM pg_attribute WHERE attrelid = 'category_assignment_logs'::regclass AND attname = 'changed_at');

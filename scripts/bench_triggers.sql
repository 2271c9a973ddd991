-- Trigger variants for scripts/bench_triggers.sh. bench_use(variant) leaves exactly one way of
-- logging on extracted_documents: 'none', 'extension' (legacy_backup's statement-level
-- triggers), 'plpgsql_row' (a hand-written row trigger), or 'plpgsql_statement' (a hand-written
-- statement trigger with transition tables). The hand-written ones insert the same log rows.

CREATE OR REPLACE FUNCTION bench_row_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO category_assignment_logs (session_id, document_id, old_category_id, new_category_id,
        old_status, new_status, old_categorized_by, new_categorized_by, old_categorized_at, new_categorized_at,
        changed_by, attribution, source)
    VALUES (NEW.session_id, NEW.id, OLD.category_id, NEW.category_id, OLD.status, NEW.status,
        OLD.categorized_by, NEW.categorized_by, OLD.categorized_at, NEW.categorized_at,
        coalesce(nullif(current_setting('legacy_backup.actor', true), ''), NEW.categorized_by, current_user),
        'setting', 'app');
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION bench_statement_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO category_assignment_logs (session_id, document_id, old_category_id, new_category_id,
        old_status, new_status, old_categorized_by, new_categorized_by, old_categorized_at, new_categorized_at,
        changed_by, attribution, source)
    SELECT n.session_id, n.id, o.category_id, n.category_id, o.status, n.status,
        o.categorized_by, n.categorized_by, o.categorized_at, n.categorized_at,
        coalesce(nullif(current_setting('legacy_backup.actor', true), ''), n.categorized_by, current_user),
        'setting', 'app'
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.category_id IS DISTINCT FROM o.category_id OR n.status IS DISTINCT FROM o.status;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION bench_use(variant text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- Dropping the extension's triggers is refused unless a superuser confirms it.
    PERFORM set_config('legacy_backup.allow_drop', 'on', true);
    DROP TRIGGER IF EXISTS legacy_backup_log_update ON extracted_documents;
    DROP TRIGGER IF EXISTS legacy_backup_log_insert ON extracted_documents;
    DROP TRIGGER IF EXISTS legacy_backup_log_delete ON extracted_documents;
    DROP TRIGGER IF EXISTS bench_row ON extracted_documents;
    DROP TRIGGER IF EXISTS bench_statement ON extracted_documents;
    CASE variant
    WHEN 'none', 'floor' THEN NULL;
    WHEN 'extension' THEN PERFORM legacy_backup_attach();
    WHEN 'plpgsql_row' THEN
        CREATE TRIGGER bench_row AFTER UPDATE ON extracted_documents FOR EACH ROW
        WHEN (OLD.category_id IS DISTINCT FROM NEW.category_id OR OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION bench_row_log();
    WHEN 'plpgsql_statement' THEN
        CREATE TRIGGER bench_statement AFTER UPDATE ON extracted_documents
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
        EXECUTE FUNCTION bench_statement_log();
    END CASE;
END $$;

-- One bulk merge (moves every document of two categories into a third), timed, rolled back.
-- The 'floor' variant has no trigger: after the same UPDATE, it inserts the same log rows from
-- a table prepared beforehand (bench_merge_log_rows): no capture, no join, just the rows. No
-- trigger can log for less, so it shows what writing the log alone costs.
CREATE TABLE IF NOT EXISTS bench_merge_log_rows AS
SELECT d.session_id, d.id AS document_id, d.category_id AS old_category_id, d.session_id || '-cat-001' AS new_category_id,
       d.status::text AS status, d.categorized_by, d.categorized_at
FROM extracted_documents d WHERE d.session_id = 'bm' AND d.category_id IN ('bm-cat-002', 'bm-cat-003');

CREATE OR REPLACE FUNCTION bench_merge_ms(sid text, floor boolean DEFAULT false) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; ms float8; moved int;
BEGIN
    BEGIN
        t0 := clock_timestamp();
        IF floor THEN
            UPDATE extracted_documents SET category_id = sid || '-cat-001', updated_at = now()
            WHERE session_id = sid AND category_id IN (sid || '-cat-002', sid || '-cat-003');
            INSERT INTO category_assignment_logs (session_id, document_id, old_category_id, new_category_id,
                old_status, new_status, old_categorized_by, new_categorized_by, old_categorized_at, new_categorized_at,
                changed_by, attribution, source)
            SELECT session_id, document_id, old_category_id, new_category_id, status, status, categorized_by, categorized_by,
                   categorized_at, categorized_at, 'pg:' || session_user, 'db_user', 'app'
            FROM bench_merge_log_rows;
        ELSE
            UPDATE extracted_documents SET category_id = sid || '-cat-001', updated_at = now()
            WHERE session_id = sid AND category_id IN (sid || '-cat-002', sid || '-cat-003');
        END IF;
        GET DIAGNOSTICS moved = ROW_COUNT;
        ms := 1000 * extract(epoch FROM clock_timestamp() - t0);
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'rollback', DETAIL = moved::text;
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    RETURN ms;
END $$;

-- Trigger variants for scripts/bench_triggers.sh. bench_use(variant) leaves exactly one way of
-- logging on extracted_documents: 'none', 'extension' (legacy_backup's statement-level
-- triggers), 'plpgsql_row' (a hand-written row trigger), or 'plpgsql_statement' (a hand-written
-- statement trigger with transition tables). The hand-written ones insert the same log rows.
-- bench_merge_ms times one bulk merge; bench_pipeline_prepare / bench_pipeline_ms /
-- bench_pipeline_round time the AI pipeline's writes (they need tests/fixtures/app_workload.sql).

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
DECLARE trigger_name name;
BEGIN
    -- Dropping the extension's triggers is refused unless a superuser confirms it.
    PERFORM set_config('legacy_backup.allow_drop', 'on', true);
    FOR trigger_name IN SELECT t.tgname FROM pg_trigger t
                        WHERE t.tgrelid = 'extracted_documents'::regclass AND t.tgname LIKE 'legacy\_backup\_%' LOOP
        EXECUTE format('DROP TRIGGER %I ON extracted_documents', trigger_name);
    END LOOP;
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

-- Pipeline writes (app-schema.md, "The application today"), replayed through the application's
-- own statements (tests/fixtures/app_workload.sql). bench_pipeline_prepare(sid, n) first commits
-- the state the pipeline writes into: every document of the session already has an extracted
-- text (~20 KB) and an embedding (1,536 floats), as it has by the time the pipeline clusters.
-- bench_pipeline_inputs holds, for the first n documents, a new text and a new embedding, made
-- beforehand so that the timed loops generate nothing. The texts are md5-based words, different
-- for every document, so they do not compress away.
CREATE TABLE IF NOT EXISTS bench_pipeline_inputs (i int PRIMARY KEY, id text NOT NULL, body text NOT NULL, embedding real[] NOT NULL);

CREATE OR REPLACE FUNCTION bench_pipeline_prepare(sid text, n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE bench_pipeline_inputs;
    INSERT INTO bench_pipeline_inputs (i, id, body, embedding)
    SELECT d.k, d.id,
           (SELECT string_agg(substr(md5(d.id || ':' || w), 1, 3 + w % 8), ' ')
              FROM generate_series(1, 2700) w) AS body,
           (SELECT array_agg(random()::real) FROM generate_series(1, 1536) x WHERE d.k > 0) AS embedding
    FROM (SELECT id, row_number() OVER (ORDER BY id) AS k FROM extracted_documents WHERE session_id = sid) d
    WHERE d.k <= n;
    -- Committed state: document k carries input 1 + k % n (so each timed write changes its row),
    -- prefixed with its own id.
    UPDATE extracted_documents e
       SET extracted_text = 'Document ' || e.id || E'\n' || p.body, primary_language = 'en',
           language_confidence = 0.97, content_embedding = p.embedding, updated_at = now()
      FROM (SELECT id, row_number() OVER (ORDER BY id) AS k FROM extracted_documents WHERE session_id = sid) d
      JOIN bench_pipeline_inputs p ON p.i = 1 + d.k % n
     WHERE e.id = d.id;
END $$;

-- One pipeline write, timed and rolled back (like bench_merge_ms): 'extract' and 'embed' are one
-- statement per document for the n documents of bench_pipeline_inputs; 'cluster' and
-- 'skip_reason' are one statement for every document of the session. Inputs are loaded into
-- variables before the clock starts.
CREATE OR REPLACE FUNCTION bench_pipeline_ms(sid text, write text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz; ms float8; n_rows int := 0; k int;
    inputs bench_pipeline_inputs[];
    all_ids text[];
    cluster uuid := gen_random_uuid();
BEGIN
    IF write IN ('extract', 'embed') THEN
        SELECT array_agg(p ORDER BY p.i) INTO inputs FROM bench_pipeline_inputs p;
    ELSE
        SELECT array_agg(id ORDER BY id) INTO all_ids FROM extracted_documents WHERE session_id = sid;
    END IF;
    BEGIN
        t0 := clock_timestamp();
        CASE write
        WHEN 'extract' THEN
            FOR k IN 1..cardinality(inputs) LOOP
                PERFORM app_extract_text(inputs[k].id, inputs[k].body, 'en', 0.9);
            END LOOP;
            n_rows := cardinality(inputs);
        WHEN 'embed' THEN
            FOR k IN 1..cardinality(inputs) LOOP
                PERFORM app_embed(inputs[k].id, inputs[k].embedding);
            END LOOP;
            n_rows := cardinality(inputs);
        WHEN 'cluster' THEN
            n_rows := app_set_cluster(sid, cluster, all_ids);
        WHEN 'skip_reason' THEN
            n_rows := app_mark_skip_reason(all_ids, 'Scanned');
        END CASE;
        ms := 1000 * extract(epoch FROM clock_timestamp() - t0);
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'rollback', DETAIL = n_rows::text;
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    RETURN ms;
END $$;

-- One round of a variant: bench_use(variant), then each pipeline write once, in a fixed order.
CREATE OR REPLACE FUNCTION bench_pipeline_round(sid text, variant text)
RETURNS TABLE (write text, ms float8) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bench_use(variant);
    FOREACH write IN ARRAY ARRAY['extract', 'embed', 'cluster', 'skip_reason'] LOOP
        ms := bench_pipeline_ms(sid, write);
        RETURN NEXT;
    END LOOP;
END $$;

-- Snapshot build, three ways, interleaved in one run (see scripts/bench_snapshot.sh).
-- A: legacy_snapshot(); B: the best hand-written single json_build_object/json_agg query with the
-- same content; C: the floor, COPY of the same document columns to /dev/null.
-- Every variant runs server-side; no result travels to the client.

-- The hand-written query is run with the session id as a literal (format %L), so it is planned
-- for that session exactly as a DBA's ad-hoc query would be.
CREATE OR REPLACE FUNCTION pg_temp.handwritten_sql(sid text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT replace($q$
WITH d AS (
    SELECT d.id, d.file_name, d.file_extension, d.storage_path, d.folder_path, d.category_id,
           c.name AS category_name, d.status, d.email_subject, d.email_sender, d.email_date,
           d.is_sent, d.batch_id, d.categorized_by, d.categorized_at
    FROM extracted_documents d LEFT JOIN import_categories c ON c.id = d.category_id AND c.session_id = d.session_id
    WHERE d.session_id = @SID@
), stats AS (
    SELECT count(*) AS total, count(*) FILTER (WHERE status = 'Categorized') AS categorized,
           count(*) FILTER (WHERE status = 'Skipped') AS skipped,
           count(*) FILTER (WHERE status = 'Uncategorized') AS uncategorized
    FROM d
), cat AS (
    SELECT c.id, c.name, c.merged_into, c.document_count, coalesce(n.real, 0) AS real
    FROM import_categories c
    LEFT JOIN (SELECT category_id, count(*) AS real FROM d GROUP BY 1) n ON n.category_id = c.id
    WHERE c.session_id = @SID@
), bat AS (
    SELECT b.id, b.month_year, b.assigned_to, NULLIF(btrim(concat_ws(' ', u.first_name, u.last_name)), '') AS assigned_to_name,
           b.document_count, b.categorized_count, b.skipped_count,
           coalesce(n.docs, 0) AS real_docs, coalesce(n.cat, 0) AS real_cat, coalesce(n.skip, 0) AS real_skip
    FROM document_batches b LEFT JOIN users u ON u.id = b.assigned_to
    LEFT JOIN (SELECT batch_id, count(*) AS docs, count(*) FILTER (WHERE status = 'Categorized') AS cat,
                      count(*) FILTER (WHERE status = 'Skipped') AS skip FROM d GROUP BY 1) n ON n.batch_id = b.id
    WHERE b.session_id = @SID@
)
SELECT json_build_object(
    'formatVersion', 1, 'sessionId', s.id, 'snapshotAt', clock_timestamp(), 'firmId', s.firm_id,
    'pstFileName', s.pst_file_name, 'status', s.status,
    'documents', coalesce((SELECT json_agg(json_build_object(
        'id', id, 'fileName', file_name, 'fileExtension', file_extension, 'storagePath', storage_path,
        'folderPath', folder_path, 'categoryId', category_id, 'categoryName', category_name, 'status', status,
        'emailSubject', email_subject, 'emailSender', email_sender, 'emailDate', email_date, 'isSent', is_sent,
        'batchId', batch_id, 'categorizedBy', categorized_by, 'categorizedAt', categorized_at) ORDER BY id COLLATE "C") FROM d), '[]'),
    'stats', (SELECT row_to_json(stats) FROM stats),
    'categories', coalesce((SELECT json_agg(json_build_object('id', id, 'name', name, 'mergedInto', merged_into,
        'documentCount', document_count, 'realDocumentCount', real) ORDER BY id COLLATE "C") FROM cat), '[]'),
    'batches', coalesce((SELECT json_agg(json_build_object('id', id, 'monthYear', month_year, 'assignedTo', assigned_to,
        'assignedToName', assigned_to_name, 'documentCount', document_count, 'categorizedCount', categorized_count,
        'skippedCount', skipped_count, 'realDocumentCount', real_docs, 'realCategorizedCount', real_cat,
        'realSkippedCount', real_skip) ORDER BY month_year COLLATE "C", id COLLATE "C") FROM bat), '[]'),
    'consistency', coalesce((SELECT json_agg(x) FROM (
        SELECT 'session' AS entity, s.id, 'total_documents' AS field, s.total_documents AS stored, st.total AS actual FROM stats st WHERE s.total_documents <> st.total
        UNION ALL SELECT 'session', s.id, 'categorized_count', s.categorized_count, st.categorized FROM stats st WHERE s.categorized_count <> st.categorized
        UNION ALL SELECT 'session', s.id, 'skipped_count', s.skipped_count, st.skipped FROM stats st WHERE s.skipped_count <> st.skipped
        UNION ALL SELECT 'category', id, 'document_count', document_count, real FROM cat WHERE document_count <> real
        UNION ALL SELECT 'batch', id, 'document_count', document_count, real_docs FROM bat WHERE document_count <> real_docs
        UNION ALL SELECT 'batch', id, 'categorized_count', categorized_count, real_cat FROM bat WHERE categorized_count <> real_cat
        UNION ALL SELECT 'batch', id, 'skipped_count', skipped_count, real_skip FROM bat WHERE skipped_count <> real_skip) x), '[]'))
FROM legacy_import_sessions s WHERE s.id = @SID@
$q$, '@SID@', quote_literal(sid))
$f$;

CREATE OR REPLACE FUNCTION pg_temp.handwritten_snapshot(sid text) RETURNS json LANGUAGE plpgsql AS $f$
DECLARE result json;
BEGIN
    EXECUTE pg_temp.handwritten_sql(sid) INTO result;
    RETURN result;
END $f$;

CREATE TEMP TABLE bench_runs (session text, round int, variant text, ms float8);

CREATE OR REPLACE FUNCTION pg_temp.run_bench(sid text, rounds int) RETURNS void LANGUAGE plpgsql AS $b$
DECLARE
    variants text[] := ARRAY['legacy_snapshot', 'hand-written SQL', 'COPY floor'];
    sql text[] := ARRAY[
        format('SELECT legacy_snapshot(%L) IS NULL', sid),
        'SELECT (' || pg_temp.handwritten_sql(sid) || ') IS NULL',
        format($c$COPY (SELECT id, file_name, file_extension, storage_path, folder_path, category_id, status,
                  email_subject, email_sender, email_date, is_sent, batch_id, categorized_by, categorized_at
                  FROM extracted_documents WHERE session_id = %L) TO '/dev/null'$c$, sid)];
    t0 timestamptz;
    i int;
    k int;
    v int;
BEGIN
    -- Warm-up: plans, caches, the extension's output buffer.
    FOR v IN 1..3 LOOP EXECUTE sql[v]; EXECUTE sql[v]; END LOOP;
    FOR i IN 1..rounds LOOP
        FOR k IN 0..2 LOOP
            v := 1 + (i + k) % 3;          -- rotate the order every round
            t0 := clock_timestamp();
            EXECUTE sql[v];
            INSERT INTO bench_runs VALUES (sid, i, variants[v], 1000 * extract(epoch FROM clock_timestamp() - t0));
        END LOOP;
    END LOOP;
END $b$;

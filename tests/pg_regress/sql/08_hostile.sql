-- Hostile input against every public function: NULLs, empty strings, ids with quotes, ';', '--',
-- '/', '..', '%2F', control characters, 10,000 characters; malformed and huge JSON; timestamps
-- far in the past and future; absurd intervals in settings. Each gets a clear error (never an
-- internal one) or a correct answer, and nothing is half-changed.
\set VERBOSITY default
CREATE TEMP TABLE hostile_ids (label text, value text);
INSERT INTO hostile_ids VALUES
  ('NULL', NULL), ('empty', ''), ('quote', 'x''y'), ('semicolon', 'a;DROP TABLE users'),
  ('comment', 'a--b'), ('slash', 'a/b'), ('dotdot', '../x'), ('encoded slash', 'a%2Fb'),
  ('newline', E'a\nb'), ('tab', E'a\tb'), ('bell', E'a\x07b'), ('10000 chars', repeat('a', 10000));
-- null_ok: the parameter has a default, so NULL is a valid value there (tested elsewhere).
CREATE TEMP TABLE calls (fn text, sql text, null_ok boolean DEFAULT false);
INSERT INTO calls (fn, sql) VALUES
  ('legacy_snapshot', 'SELECT legacy_snapshot(%L)'),
  ('legacy_snapshot_take', 'SELECT legacy_snapshot_take(%L)'),
  ('legacy_snapshot_take actor', 'SELECT legacy_snapshot_take(''rec'', %L)'),
  ('legacy_document_history', 'SELECT count(*) FROM legacy_document_history(%L)'),
  ('legacy_categorization_at', 'SELECT count(*) FROM legacy_categorization_at(%L, now())'),
  ('legacy_session_activity', 'SELECT count(*) FROM legacy_session_activity(%L)'),
  ('legacy_undo_last_categorization', 'SELECT legacy_undo_last_categorization(%L)'),
  ('legacy_undo_last_categorization doc', 'SELECT legacy_undo_last_categorization(''u-partner'', %L)'),
  ('legacy_export_readiness', 'SELECT legacy_export_readiness(%L)'),
  ('legacy_postpone_cleanup', 'SELECT legacy_postpone_cleanup(%L, ''u-partner'', now() + interval ''1 day'')'),
  ('legacy_postpone_cleanup actor', 'SELECT legacy_postpone_cleanup(''rec'', %L, now() + interval ''1 day'')'),
  ('legacy_restore_snapshot', 'SELECT legacy_restore_snapshot(%L, ''u-partner'')'),
  ('legacy_restore_snapshot actor', 'SELECT legacy_restore_snapshot(''x'', %L)'),
  ('legacy_cleanup_session', 'SELECT legacy_cleanup_session(%L, ''u-partner'')'),
  ('legacy_cleanup_session actor', 'SELECT legacy_cleanup_session(''rec'', %L)'),
  ('legacy_snapshot_verify', 'SELECT legacy_snapshot_verify(%L)'),
  ('legacy_snapshot_fetch', 'SELECT legacy_snapshot_fetch(%L)');
UPDATE calls SET null_ok = true WHERE fn IN ('legacy_snapshot_take actor', 'legacy_undo_last_categorization doc');

CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM legacy_backup.snapshots) AS snapshots, (SELECT count(*) FROM legacy_backup.jobs) AS jobs,
       (SELECT count(*) FROM category_assignment_logs) AS log_rows, (SELECT count(*) FROM legacy_import_audit_logs) AS audit_rows,
       (SELECT md5(string_agg(id || coalesce(category_id, '') || status, ',' ORDER BY id)) FROM extracted_documents) AS documents;

CREATE TEMP TABLE outcomes AS
SELECT c.fn, h.label, e.code, e.message
FROM calls c CROSS JOIN hostile_ids h
CROSS JOIN LATERAL regress.error_of(format(c.sql, h.value)) e
WHERE h.value IS NOT NULL OR NOT c.null_ok;

-- Every call refused, with a specific SQLSTATE; none internal (XX000), none accepted.
SELECT fn, string_agg(DISTINCT code, ', ' ORDER BY code) AS sqlstates, count(*) AS inputs
FROM outcomes GROUP BY fn ORDER BY fn;
SELECT count(*) AS internal_errors FROM outcomes WHERE code LIKE 'XX%';
SELECT count(*) AS accepted FROM outcomes WHERE code = 'ok';
-- No message repeats the 10,000-character input.
SELECT count(*) AS huge_messages FROM outcomes WHERE length(message) > 500;

-- Malformed and huge JSON.
SELECT code FROM regress.error_of($$SELECT legacy_snapshot_import('{', 'u-partner')$$);
SELECT code FROM regress.error_of($$SELECT legacy_snapshot_import('"just a string"', 'u-partner')$$);
SELECT code, left(message, 60) AS message FROM regress.error_of(
  format('SELECT legacy_snapshot_import(%L, ''u-partner'')',
         json_build_object('formatVersion', 1, 'sessionId', 'rec', 'stats', json_build_object('total', 200000),
                           'documents', (SELECT json_agg(json_build_object('id', 'nope-' || g, 'status', 'Categorized')) FROM generate_series(1, 200000) g))));
SELECT r->'changes' AS changes, jsonb_array_length(r->'missingDocuments') AS missing
FROM (SELECT legacy_snapshot_import(json_build_object('formatVersion', 1, 'sessionId', 'rec', 'stats', json_build_object('total', 50000),
        'documents', (SELECT json_agg(json_build_object('id', 'nope-' || g, 'status', 'Categorized')) FROM generate_series(1, 50000) g)), 'u-partner') AS r) x;

-- Timestamps far in the past and the future.
SELECT count(*) AS documents_in_4713_bc FROM legacy_categorization_at('rec', '4713-01-01 BC');
SELECT count(*) > 0 AS documents_in_294000 FROM legacy_categorization_at('rec', '294000-01-01');
SELECT code FROM regress.error_of($$SELECT count(*) FROM legacy_categorization_at('rec', '-infinity')$$);
SELECT code FROM regress.error_of($$SELECT legacy_postpone_cleanup('gate-a', 'u-partner', '294000-01-01')$$);
SELECT code FROM regress.error_of($$SELECT legacy_postpone_cleanup('gate-a', 'u-partner', '1900-01-01')$$);

-- Absurd intervals in settings.
SELECT s AS setting, v AS value, e.code
FROM (VALUES ('legacy_backup.undo_window'), ('legacy_backup.max_snapshot_age'), ('legacy_backup.cleanup_delay'),
             ('legacy_backup.cleanup_wait')) AS n(s)
CROSS JOIN (VALUES ('-1 day'), ('1000000 years'), ('0.5 fortnights'), ('')) AS w(v)
CROSS JOIN LATERAL regress.error_of(format('SET %s = %L', s, v)) e
ORDER BY 1, 2;

-- Nothing changed by any of it.
SELECT (SELECT count(*) FROM legacy_backup.snapshots) = b.snapshots AS snapshots_same,
       (SELECT count(*) FROM legacy_backup.jobs) = b.jobs AS jobs_same,
       (SELECT count(*) FROM category_assignment_logs) = b.log_rows AS log_same,
       (SELECT count(*) FROM legacy_import_audit_logs) = b.audit_rows AS audit_same,
       (SELECT md5(string_agg(id || coalesce(category_id, '') || status, ',' ORDER BY id)) FROM extracted_documents) = b.documents AS documents_same
FROM before b;

-- Snapshots: content, determinism, storage, audit row, and bad input.
\set VERBOSITY default
\set ECHO none
\set sid reg-s1
\set docs 100
\set cats 4
\set months 3
\i tests/fixtures/seed.sql
\set sid reg-s2
\set docs 5
\i tests/fixtures/seed.sql
\set ECHO all

-- Header and stats, counted from the documents.
SELECT j->>'formatVersion' AS format_version, j->>'sessionId' AS session_id, j->>'firmId' AS firm_id,
       j->>'pstFileName' AS pst_file_name, j->>'status' AS status,
       (j->>'snapshotAt') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$' AS snapshot_at_is_utc_iso
FROM (SELECT legacy_snapshot('reg-s1') AS j) s;
SELECT legacy_snapshot('reg-s1')->'stats' AS stats;
SELECT json_object_keys(legacy_snapshot('reg-s1')) AS top_level_keys;

-- Categories: stored and real counts (cat-001 was drifted by +2 in the seed).
SELECT c->>'id' AS id, c->>'name' AS name, c->>'mergedInto' AS merged_into,
       c->>'documentCount' AS stored, c->>'realDocumentCount' AS real
FROM json_array_elements(legacy_snapshot('reg-s1')->'categories') c;

-- Batches with assignee names and both sets of counters.
SELECT b->>'id' AS id, b->>'monthYear' AS month, b->>'assignedToName' AS assignee,
       b->>'documentCount' AS docs, b->>'categorizedCount' AS cat, b->>'realCategorizedCount' AS real_cat,
       b->>'skippedCount' AS skipped, b->>'realSkippedCount' AS real_skipped
FROM json_array_elements(legacy_snapshot('reg-s1')->'batches') b;

-- Every drifted counter is reported.
SELECT c->>'entity' AS entity, c->>'id' AS id, c->>'field' AS field, c->>'stored' AS stored, c->>'actual' AS actual
FROM json_array_elements(legacy_snapshot('reg-s1')->'consistency') c;

-- Documents: every field, sorted by id.
SELECT json_array_length(legacy_snapshot('reg-s1')->'documents') AS documents;
SELECT jsonb_pretty((legacy_snapshot('reg-s1')->'documents'->0)::jsonb) AS first_document;
SELECT bool_and(a < b) AS sorted_by_id
FROM (SELECT d->>'id' AS a, lead(d->>'id') OVER () AS b FROM json_array_elements(legacy_snapshot('reg-s1')->'documents') d) x
WHERE b IS NOT NULL;

-- Deterministic: two snapshots differ only in snapshotAt.
SELECT (legacy_snapshot('reg-s1')::jsonb - 'snapshotAt') = (legacy_snapshot('reg-s1')::jsonb - 'snapshotAt') AS deterministic;

-- legacy_snapshot has no side effects.
SELECT (SELECT count(*) FROM legacy_backup.snapshots) AS snapshots, (SELECT count(*) FROM legacy_import_audit_logs) AS audit_rows;

-- A session with no documents.
INSERT INTO legacy_import_sessions (id, firm_id, pst_file_name, pst_file_size, uploaded_by, updated_at)
VALUES ('reg-empty', 'firm-1', 'empty.pst', 0, 'u-partner', now());
SELECT legacy_snapshot('reg-empty')->'stats' AS stats, legacy_snapshot('reg-empty')->'documents' AS documents;

-- Taking a snapshot: stored bytes, hash, key, audit row, last_snapshot_at, upload queue.
CREATE TEMP TABLE taken AS SELECT legacy_snapshot_take('reg-s1', 'u-partner') AS r;
SELECT r ? 'snapshotId' AS has_id, r->>'snapshotKey' ~ '^backups/reg-s1/categorization-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z\.json$' AS key_format,
       r->'stats' AS stats, (r->>'bytes')::int > 0 AS has_bytes
FROM taken;
SELECT s.sha256 = encode(sha256(s.body), 'hex') AS sha256_matches_body,
       s.bytes = octet_length(s.body) AS bytes_match,
       s.sha256 = t.r->>'sha256' AS returned_sha256,
       s.snapshot_key = t.r->>'snapshotKey' AS returned_key,
       s.snapshot_key = 'backups/reg-s1/categorization-' ||
           to_char(s.snapshot_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24-MI-SS-MS"Z"') || '.json' AS key_is_snapshot_time,
       (convert_from(s.body, 'UTF8')::jsonb - 'snapshotAt') = (legacy_snapshot('reg-s1')::jsonb - 'snapshotAt') AS body_is_the_snapshot,
       s.taken_by, s.upload_state, s.format_version
FROM legacy_backup.snapshots s, taken t WHERE s.id = t.r->>'snapshotId';
SELECT a.session_id, a.user_id, a.action, a.details->>'snapshotKey' = t.r->>'snapshotKey' AS names_key,
       a.details->>'sha256' = t.r->>'sha256' AS names_sha256, a.details->'stats' AS stats
FROM legacy_import_audit_logs a, taken t WHERE a.action = 'CATEGORIZATION_SNAPSHOT';
SELECT s.last_snapshot_at = b.snapshot_at AS last_snapshot_at_set, s.updated_at > now() - interval '1 minute' AS updated_at_set
FROM legacy_import_sessions s JOIN legacy_backup.snapshots b ON b.session_id = s.id WHERE s.id = 'reg-s1';
SELECT session_id, taken_by, documents, categorized, upload_state, body_in_database FROM legacy_snapshots;

-- Attribution: legacy_backup.actor, else the database role.
BEGIN;
SET LOCAL legacy_backup.actor = 'u-paralegal';
SELECT legacy_snapshot_take('reg-s2') ? 'snapshotKey' AS taken;
COMMIT;
SELECT legacy_snapshot_take('reg-s2') ? 'snapshotKey' AS taken;
SELECT taken_by FROM legacy_backup.snapshots WHERE session_id = 'reg-s2' ORDER BY snapshot_at;

-- Inside a transaction that already wrote, the snapshot holds that write and stays consistent.
BEGIN;
UPDATE extracted_documents SET status = 'Skipped', category_id = NULL, updated_at = now() WHERE id = 'reg-s2-doc-000001';
SELECT r->'stats' AS stats FROM (SELECT legacy_snapshot_take('reg-s2') AS r) x;
ROLLBACK;

-- Bad input: a clear error with a specific SQLSTATE, and nothing changed.
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM legacy_backup.snapshots) AS snapshots, (SELECT count(*) FROM legacy_import_audit_logs) AS audit_rows;
SELECT * FROM regress.error_of($$SELECT legacy_snapshot(NULL)$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot('')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot('no-such-session')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take(NULL)$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take('')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take('../x')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take('a/b')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take('..')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take(E'a\x01b')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take('%2F')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take('x''; DROP TABLE users; --')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take(repeat('a', 129))$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take('no-such-session')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take('reg-s1', 'no-such-user')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take('reg-s1', '../u')$$);
SELECT (SELECT count(*) FROM legacy_backup.snapshots) = b.snapshots AS no_snapshot_added,
       (SELECT count(*) FROM legacy_import_audit_logs) = b.audit_rows AS no_audit_row_added
FROM before b;

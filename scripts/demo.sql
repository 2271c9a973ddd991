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

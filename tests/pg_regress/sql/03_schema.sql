-- CREATE EXTENSION ... SCHEMA app: functions use the application's tables in that schema,
-- never whatever the caller's search_path finds first.
\set VERBOSITY default
CREATE DATABASE lb_schema_test;
\c lb_schema_test
CREATE SCHEMA app;
SET search_path = app;
\set ECHO none
\i tests/fixtures/app_schema.sql
\set sid app-s1
\set docs 20
\set cats 3
\set months 2
\i tests/fixtures/seed.sql
\set ECHO all
RESET search_path;
CREATE EXTENSION legacy_backup SCHEMA app;
SELECT p.proname, p.pronamespace::regnamespace AS schema, p.proconfig
FROM pg_proc p WHERE p.proname = 'legacy_snapshot_take';
SELECT check_name, ok FROM app.legacy_backup_health() WHERE NOT ok;

-- A hostile schema earlier in the caller's path, with decoy tables named like the application's
-- and a decoy function named like a builtin the extension's SQL uses.
CREATE SCHEMA evil;
CREATE TABLE evil.legacy_import_sessions (LIKE app.legacy_import_sessions);
INSERT INTO evil.legacy_import_sessions SELECT * FROM app.legacy_import_sessions;
UPDATE evil.legacy_import_sessions SET firm_id = 'EVIL FIRM';
CREATE TABLE evil.extracted_documents (LIKE app.extracted_documents);
CREATE FUNCTION evil.btrim(text) RETURNS text LANGUAGE sql AS $$ SELECT 'EVIL NAME' $$;
CREATE TEMP TABLE extracted_documents (LIKE app.extracted_documents);
SET search_path = evil, public, app;

SELECT j->>'firmId' AS firm_id, j->'stats' AS stats, j->'batches'->0->>'assignedToName' AS assignee
FROM (SELECT app.legacy_snapshot('app-s1') AS j) s;
SELECT r->'stats' AS stats FROM (SELECT app.legacy_snapshot_take('app-s1') AS r) x;
SELECT session_id, action FROM app.legacy_import_audit_logs;
SELECT count(*) AS evil_audit_rows FROM pg_tables WHERE schemaname = 'evil' AND tablename = 'legacy_import_audit_logs';
SELECT last_snapshot_at IS NOT NULL AS app_session_stamped FROM app.legacy_import_sessions;
SELECT last_snapshot_at IS NOT NULL AS decoy_stamped FROM evil.legacy_import_sessions;

\c legacy_regress
DROP DATABASE lb_schema_test;

-- Installing into a database whose application tables do not exist yet (as in every pg_restore),
-- attaching once they do, and dropping without touching application data.
\set VERBOSITY default

-- Errors are shown as SQLSTATE, message, detail and hint by this helper.
CREATE SCHEMA regress;
CREATE FUNCTION regress.error_of(statement text)
RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN QUERY SELECT 'ok'::text, NULL::text, NULL::text, NULL::text;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END $$;

-- One WARNING naming every missing table; the extension installs anyway.
CREATE EXTENSION legacy_backup;
SELECT extname, extversion FROM pg_extension WHERE extname = 'legacy_backup';
SELECT nspname FROM pg_namespace WHERE nspname = 'legacy_backup';

-- While detached, every function says what to do.
SELECT * FROM regress.error_of($$SELECT legacy_snapshot('s1')$$);
SELECT * FROM regress.error_of($$SELECT legacy_snapshot_take('s1')$$);
SELECT * FROM regress.error_of($$SELECT * FROM legacy_backup_attach()$$);
SELECT check_name, ok FROM legacy_backup_health() ORDER BY check_name;

-- The application's tables arrive (older schema: no last_snapshot_at / cleanup_scheduled_at).
\set ECHO none
\i tests/fixtures/app_schema.sql
\set ECHO all
SELECT column_name FROM information_schema.columns
WHERE table_name = 'legacy_import_sessions' AND column_name IN ('last_snapshot_at', 'cleanup_scheduled_at');

SELECT * FROM legacy_backup_attach();
-- Idempotent: a second run finds everything present.
SELECT * FROM legacy_backup_attach();
SELECT column_name, data_type, datetime_precision FROM information_schema.columns
WHERE table_name = 'legacy_import_sessions' AND column_name IN ('last_snapshot_at', 'cleanup_scheduled_at')
ORDER BY column_name;
SELECT check_name, ok, detail FROM legacy_backup_health() WHERE check_name NOT LIKE 'snapshots%' ORDER BY check_name;

-- Every public function and the view carry a COMMENT.
SELECT p.proname, obj_description(p.oid, 'pg_proc') IS NOT NULL AS has_comment
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'legacy_backup'
ORDER BY p.proname;
SELECT obj_description('legacy_snapshots'::regclass, 'pg_class') IS NOT NULL AS view_has_comment;

-- Every function pins its search_path.
SELECT p.proname, p.proconfig
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'legacy_backup'
ORDER BY p.proname;

-- The snapshots table is registered for pg_dump.
SELECT unnest(extconfig)::regclass FROM pg_extension WHERE extname = 'legacy_backup';

-- DROP EXTENSION never drops an application table or column. Its triggers on the application's
-- tables depend on it, so a plain DROP is refused and CASCADE removes only those triggers.
\set VERBOSITY terse
DROP EXTENSION legacy_backup;
DROP EXTENSION legacy_backup CASCADE;
\set VERBOSITY default
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname LIKE 'legacy_backup%';
SELECT count(*) AS app_tables FROM pg_tables WHERE schemaname = 'public'
  AND tablename IN ('legacy_import_sessions', 'extracted_documents', 'import_categories',
                    'document_batches', 'legacy_import_audit_logs', 'users');
SELECT count(*) AS added_columns_kept FROM information_schema.columns
WHERE table_name = 'legacy_import_sessions' AND column_name IN ('last_snapshot_at', 'cleanup_scheduled_at');

-- With the tables present, CREATE EXTENSION attaches silently.
CREATE EXTENSION legacy_backup;
SELECT bool_and(ok) AS attached FROM legacy_backup_health() WHERE check_name LIKE 'table %' OR check_name LIKE 'column %';

-- Privileges: the three roles, what PUBLIC may not do, the application's role at work, a hostile
-- search_path against SECURITY DEFINER functions, and the secret access key kept from everyone
-- but superusers.
\set VERBOSITY default
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'legacy_backup_%' ORDER BY rolname;
SELECT r.rolname AS role, m.rolname AS member_of FROM pg_auth_members a
JOIN pg_roles r ON r.oid = a.member JOIN pg_roles m ON m.oid = a.roleid
WHERE r.rolname LIKE 'legacy_backup_%' ORDER BY 1;

-- What each role may execute.
SELECT p.proname,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public,
       has_function_privilege('legacy_backup_reader', p.oid, 'EXECUTE') AS reader,
       has_function_privilege('legacy_backup_operator', p.oid, 'EXECUTE') AS operator,
       has_function_privilege('legacy_backup_admin', p.oid, 'EXECUTE') AS admin,
       p.prosecdef AS security_definer,
       p.proconfig IS NOT NULL AS pins_search_path
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'legacy_backup'
ORDER BY p.proname;

-- No SECURITY DEFINER function of the extension is executable by PUBLIC (docs/security.md).
SELECT count(*) AS definer_functions_public_may_run
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'legacy_backup'
WHERE p.prosecdef AND has_function_privilege('public', p.oid, 'EXECUTE');

-- The application's role: an operator, with rights on its own tables only.
CREATE ROLE lb_app LOGIN;
GRANT legacy_backup_operator TO lb_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON legacy_import_sessions, extracted_documents, import_categories,
      document_batches, legacy_import_audit_logs, users TO lb_app;
GRANT USAGE ON SCHEMA regress TO lb_app;
CREATE SCHEMA lb_app_own AUTHORIZATION lb_app;
\c - lb_app
-- Its changes are logged (the log triggers run as the extension's owner), credited to it.
UPDATE extracted_documents SET status = 'Skipped', category_id = NULL, updated_at = now() WHERE id = 'rec-doc-000002';
SELECT changed_by, attribution FROM category_assignment_logs WHERE document_id = 'rec-doc-000002' ORDER BY id DESC LIMIT 1;
-- It takes snapshots without any privilege on the extension's tables.
SELECT legacy_snapshot_take('rec') ? 'snapshotId' AS taken;
SELECT code, message FROM regress.error_of($$SELECT count(*) FROM legacy_backup.snapshots$$);
SELECT code, message FROM regress.error_of($$SELECT count(*) FROM legacy_backup.jobs$$);
-- Admin functions are not for it.
SELECT code, message FROM regress.error_of($$SELECT legacy_cleanup_session('rec', 'u-partner')$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_restore_snapshot('x', 'u-partner')$$);
SELECT code, message FROM regress.error_of($$SELECT * FROM legacy_backup_attach()$$);
-- A hostile search_path: its own tables and functions named like the application's come first.
CREATE TABLE lb_app_own.extracted_documents (id text);
CREATE TABLE lb_app_own.legacy_import_sessions (id text);
CREATE FUNCTION lb_app_own.btrim(text) RETURNS text LANGUAGE sql AS $$ SELECT 'HIJACKED' $$;
SET search_path = lb_app_own, public;
SELECT (r->'stats'->>'total')::int > 0 AS read_the_real_tables FROM (SELECT legacy_snapshot_take('rec') AS r) x;
SELECT count(*) AS hijacked_names FROM json_array_elements(legacy_snapshot('rec')->'batches') b WHERE b->>'assignedToName' = 'HIJACKED';
RESET search_path;
-- The secret access key: not through SHOW, current_setting, or pg_settings (what SHOW ALL lists).
SELECT code, message FROM regress.error_of($$SHOW legacy_backup.r2_secret_access_key$$);
SELECT code, message FROM regress.error_of($$SELECT current_setting('legacy_backup.r2_secret_access_key')$$);
SELECT count(*) AS in_pg_settings FROM pg_settings WHERE name = 'legacy_backup.r2_secret_access_key';
SELECT code, message FROM regress.error_of($$SET legacy_backup.r2_secret_access_key = 'x'$$);
\c - postgres
SELECT count(*) AS superuser_sees_it FROM pg_settings WHERE name = 'legacy_backup.r2_secret_access_key';
DROP SCHEMA lb_app_own CASCADE;
REVOKE ALL ON legacy_import_sessions, extracted_documents, import_categories, document_batches,
       legacy_import_audit_logs, users FROM lb_app;
REVOKE USAGE ON SCHEMA regress FROM lb_app;
DROP ROLE lb_app;

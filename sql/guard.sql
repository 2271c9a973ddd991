-- The guards (event triggers). Each refusal can be confirmed by a superuser with
-- SET legacy_backup.allow_drop = on.
--
-- 1. legacy_backup_drop_guard (src/guard.rs, ddl_command_start): DROP EXTENSION, DROP SCHEMA …
--    CASCADE of the extension's schema and DROP OWNED BY the extension's owner would drop every
--    snapshot and the whole audit trail; refused while they hold data. It also refuses
--    ALTER TYPE … RENAME VALUE on the two status enums, which would change every row's status
--    with no row written (55000).
-- 2. legacy_backup_sql_drop_guard (sql_drop): the backstop for every other statement, whatever
--    cascade brought it there: refused when it dropped the extension's data tables, or one of
--    the extension's triggers on an application table that itself stays.
-- 3. legacy_backup_trigger_guard (ddl_command_end): refuses a statement that left one of the
--    extension's triggers disabled, replication-only, calling another function, renamed or on a
--    renamed table; a column the extension reads retyped or missing; a child table under the two
--    tables that carry the triggers; or an index or statistics object on an application table
--    whose expression calls a function or operator outside pg_catalog, which the planner may run
--    with the rights of whoever plans a query on it (SQLSTATE LB006).
-- 4. legacy_backup_rewrite_guard (table_rewrite): refuses rewriting extracted_documents or
--    legacy_import_sessions (ALTER COLUMN … TYPE … USING changes every row without a trigger
--    firing; LB006). The table owner may do all of these; none may
--    silence the trail unseen or slip its own code into the extension's privileged reads.
CREATE FUNCTION legacy_backup.drop_guard() RETURNS event_trigger
    LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'legacy_backup_drop_guard';
COMMENT ON FUNCTION legacy_backup.drop_guard() IS
    'Event trigger: refuses DROP EXTENSION legacy_backup (and DROP SCHEMA … CASCADE, DROP OWNED BY its owner) while snapshots or audit-trail changes exist, unless legacy_backup.allow_drop is on';
REVOKE ALL ON FUNCTION legacy_backup.drop_guard() FROM PUBLIC;
CREATE EVENT TRIGGER legacy_backup_drop_guard ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED', 'ALTER TYPE', 'ALTER SCHEMA')
    EXECUTE FUNCTION legacy_backup.drop_guard();
COMMENT ON EVENT TRIGGER legacy_backup_drop_guard IS
    'Refuses DROP EXTENSION legacy_backup (and DROP SCHEMA … CASCADE of its schema, DROP OWNED BY its owner) while snapshots or audit-trail changes exist, renaming its schema, and renaming values of the status enums (SET legacy_backup.allow_drop = on to confirm)';

CREATE FUNCTION legacy_backup.sql_drop_guard() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lost text;
    -- The names of the extension's triggers on application tables (attach::TRIGGERS).
    trigger_names text[] := @extschema@.legacy_backup_protected_triggers();
BEGIN
    IF coalesce(nullif(current_setting('legacy_backup.allow_drop', true), ''), 'off')::boolean THEN
        RETURN;
    END IF;
    -- DROP EXTENSION and DROP SCHEMA were judged, with row counts, before they ran.
    IF tg_tag IN ('DROP EXTENSION', 'DROP SCHEMA') THEN
        RETURN;
    END IF;
    SELECT string_agg(d.object_identity, ', ') INTO lost
    FROM pg_event_trigger_dropped_objects() d
    WHERE (d.object_type = 'extension' AND d.object_identity = 'legacy_backup')
       OR (d.object_type = 'schema' AND d.object_identity = 'legacy_backup')
       OR (d.object_type = 'table' AND (d.schema_name = 'legacy_backup'
                                         OR (d.schema_name = '@extschema@' AND d.object_name IN ('category_assignment_logs', 'category_change_logs'))));
    IF lost IS NOT NULL THEN
        RAISE EXCEPTION '% would drop the data of extension legacy_backup: %', tg_tag, lost
            USING ERRCODE = '2BP01',
                  DETAIL = 'Snapshots, jobs and the audit trail are dropped only with DROP EXTENSION, after confirmation.',
                  HINT = 'Keep them first (pg_dump), then SET legacy_backup.allow_drop = on and run the statement again.';
    END IF;
    SELECT string_agg(t.object_identity, ', ') INTO lost
    FROM pg_event_trigger_dropped_objects() t
    WHERE t.object_type = 'trigger' AND split_part(t.object_identity, ' on ', 1) = ANY (trigger_names)
      AND NOT EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() x
                      WHERE x.object_type = 'table' AND x.object_identity = split_part(t.object_identity, ' on ', 2));
    IF lost IS NOT NULL THEN
        RAISE EXCEPTION 'cannot drop trigger %: it keeps the audit trail and the export gate of legacy_backup', lost
            USING ERRCODE = 'LB006',
                  DETAIL = 'Without it, changes would go unlogged or exports unguarded.',
                  HINT = 'A superuser may confirm with SET legacy_backup.allow_drop = on; legacy_backup_attach() recreates it.';
    END IF;
END $$;
COMMENT ON FUNCTION legacy_backup.sql_drop_guard() IS
    'Event trigger: refuses any statement (DROP OWNED, cascades) that drops the extension''s data tables or its triggers, unless legacy_backup.allow_drop is on';
REVOKE ALL ON FUNCTION legacy_backup.sql_drop_guard() FROM PUBLIC;
CREATE EVENT TRIGGER legacy_backup_sql_drop_guard ON sql_drop
    EXECUTE FUNCTION legacy_backup.sql_drop_guard();
COMMENT ON EVENT TRIGGER legacy_backup_sql_drop_guard IS
    'Refuses statements that drop the snapshots, the audit trail or the extension''s triggers (SET legacy_backup.allow_drop = on to confirm)';

CREATE FUNCTION legacy_backup.trigger_guard() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problems text;
BEGIN
    IF coalesce(nullif(current_setting('legacy_backup.allow_drop', true), ''), 'off')::boolean THEN
        RETURN;
    END IF;
    -- While the extension itself is being created or updated, its checks may not exist yet.
    IF to_regprocedure('@extschema@.legacy_backup_trigger_problems()') IS NULL THEN
        RETURN;
    END IF;
    -- Tables other than the application's six (attach::REQUIRED_TABLES), those carrying the
    -- extension's triggers (under any name they now have) and their children are none of our
    -- business.
    IF tg_tag IN ('ALTER TABLE', 'CREATE TABLE') AND NOT EXISTS (
           SELECT 1 FROM pg_event_trigger_ddl_commands() c
           WHERE c.classid = 'pg_catalog.pg_class'::regclass
             AND (c.objid IN (SELECT r.oid FROM pg_class r WHERE r.relnamespace = '@extschema@'::regnamespace
                              AND r.relname IN ('legacy_import_sessions', 'extracted_documents', 'import_categories',
                                                'document_batches', 'legacy_import_audit_logs', 'users'))
                  OR EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                             WHERE t.tgrelid = c.objid AND starts_with(p.proname::text, 'legacy_backup_')
                               AND p.pronamespace = '@extschema@'::regnamespace)
                  OR EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class r ON r.oid = i.inhparent
                             WHERE i.inhrelid = c.objid AND r.relnamespace = '@extschema@'::regnamespace
                               AND r.relname IN ('legacy_import_sessions', 'extracted_documents', 'import_categories',
                                                 'document_batches', 'legacy_import_audit_logs', 'users')))) THEN
        RETURN;
    END IF;
    SELECT string_agg(p.trigger_name || ' ' || p.problem, '; ') INTO problems
    FROM @extschema@.legacy_backup_trigger_problems() p;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'refused: % would leave the triggers of legacy_backup not doing their job', tg_tag
            USING ERRCODE = 'LB006',
                  DETAIL = 'After it: ' || problems || '.',
                  HINT = 'These triggers and columns keep the audit trail and the export gate (docs/security.md). A superuser may confirm with SET legacy_backup.allow_drop = on.';
    END IF;
END $$;
COMMENT ON FUNCTION legacy_backup.trigger_guard() IS
    'Event trigger: refuses ALTER TABLE / ALTER TRIGGER / CREATE TRIGGER that disable, rename or replace the extension''s triggers (LB006), unless legacy_backup.allow_drop is on';
REVOKE ALL ON FUNCTION legacy_backup.trigger_guard() FROM PUBLIC;
CREATE EVENT TRIGGER legacy_backup_trigger_guard ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER TRIGGER', 'CREATE TRIGGER', 'CREATE TABLE', 'CREATE INDEX',
                 'ALTER INDEX', 'CREATE STATISTICS', 'DROP TYPE')
    EXECUTE FUNCTION legacy_backup.trigger_guard();
COMMENT ON EVENT TRIGGER legacy_backup_trigger_guard IS
    'Refuses statements that disable, rename or replace the extension''s triggers on application tables (SQLSTATE LB006)';

CREATE FUNCTION legacy_backup.rewrite_guard() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(nullif(current_setting('legacy_backup.allow_drop', true), ''), 'off')::boolean THEN
        RETURN;
    END IF;
    IF pg_event_trigger_table_rewrite_oid() IN (to_regclass('@extschema@.extracted_documents'),
                                                to_regclass('@extschema@.legacy_import_sessions')) THEN
        RAISE EXCEPTION 'refused: % would rewrite every row of %', tg_tag, pg_event_trigger_table_rewrite_oid()::regclass
            USING ERRCODE = 'LB006',
                  DETAIL = 'A rewrite (ALTER COLUMN … TYPE … USING, a volatile default) changes rows without the audit trail seeing them.',
                  HINT = 'A superuser may confirm with SET legacy_backup.allow_drop = on, after a snapshot.';
    END IF;
END $$;
COMMENT ON FUNCTION legacy_backup.rewrite_guard() IS
    'Event trigger: refuses rewriting extracted_documents or legacy_import_sessions (LB006), unless legacy_backup.allow_drop is on';
REVOKE ALL ON FUNCTION legacy_backup.rewrite_guard() FROM PUBLIC;
CREATE EVENT TRIGGER legacy_backup_rewrite_guard ON table_rewrite
    EXECUTE FUNCTION legacy_backup.rewrite_guard();
COMMENT ON EVENT TRIGGER legacy_backup_rewrite_guard IS
    'Refuses table rewrites of extracted_documents and legacy_import_sessions (SQLSTATE LB006)';

-- The DROP EXTENSION guard (src/guard.rs): DROP EXTENSION, or DROP SCHEMA … CASCADE of the
-- extension's schema, would drop every snapshot and the whole audit trail with the extension's
-- tables, so it is refused while they hold data.
CREATE FUNCTION legacy_backup.drop_guard() RETURNS event_trigger
    LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'legacy_backup_drop_guard';
COMMENT ON FUNCTION legacy_backup.drop_guard() IS
    'Event trigger: refuses DROP EXTENSION legacy_backup while snapshots or audit-trail changes exist, unless legacy_backup.allow_drop is on';
REVOKE ALL ON FUNCTION legacy_backup.drop_guard() FROM PUBLIC;
CREATE EVENT TRIGGER legacy_backup_drop_guard ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA')
    EXECUTE FUNCTION legacy_backup.drop_guard();
COMMENT ON EVENT TRIGGER legacy_backup_drop_guard IS
    'Refuses DROP EXTENSION legacy_backup (and DROP SCHEMA … CASCADE of its schema) while snapshots or audit-trail changes exist (SET legacy_backup.allow_drop = on to confirm)';

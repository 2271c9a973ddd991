-- legacy_backup 0.1.0 -> 0.2.0 (ALTER EXTENSION legacy_backup UPDATE TO '0.2.0').
-- Tested by tests/integration/t_upgrade.sh: a 0.1.0 database holding data, updated, must have
-- exactly the objects of a fresh 0.2.0 install, and keep its data.
--
-- New in 0.2.0: the DROP EXTENSION guard (src/guard.rs, sql/guard.sql) and the setting
-- legacy_backup.allow_drop (defined by the library, nothing to do here).

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

-- legacy_backup 0.3.0 -> 0.4.0 (ALTER EXTENSION legacy_backup UPDATE TO '0.4.0').
-- Tested by tests/integration/t_upgrade.sh: an updated database must have exactly the objects of
-- a fresh 0.4.0 install (tests/upgrade/catalog.sql) and keep its data. Upgrade scripts cannot
-- include files: the bodies below repeat sql/audit.sql, sql/gate.sql, sql/guard.sql and
-- sql/bootstrap.sql; the catalog-equality test fails on any drift.
--
-- 0.4.0 fits the application as it runs: the audit trail's UPDATE path is a filtered C row
-- trigger plus a statement flush (pipeline writes cost nothing), snapshot format 2, exports that
-- begin on a pinned snapshot (legacy_export_begin), cleanup prefixes and partner roles as
-- settings (the library reads those).

-- The extension's own triggers are replaced below: the guards allow it for this script only.
SELECT pg_catalog.set_config('legacy_backup.allow_drop', 'on', true);

-- 1. The audit trail (src/audit_trail.rs): the statement triggers with transition tables go;
-- legacy_backup_attach() at the end creates the row triggers, their flush and the document id
-- guard.
DO $$
BEGIN
    IF pg_catalog.to_regclass('@extschema@.extracted_documents') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS legacy_backup_log_update ON @extschema@.extracted_documents;
        DROP TRIGGER IF EXISTS legacy_backup_log_insert ON @extschema@.extracted_documents;
        DROP TRIGGER IF EXISTS legacy_backup_log_delete ON @extschema@.extracted_documents;
    END IF;
END $$;
-- One changed document as the audit trail's flush passes a batch of them (src/audit_trail.rs):
-- an array of these unnests faster than one array per column.
CREATE TYPE legacy_backup.log_change AS (
    session_id         text,
    document_id        text,
    old_category_id    text,
    new_category_id    text,
    old_status         text,
    new_status         text,
    old_categorized_by text,
    new_categorized_by text,
    old_categorized_at timestamptz,
    new_categorized_at timestamptz,
    changed_by         text,
    attribution        text,
    source             text
);
COMMENT ON TYPE legacy_backup.log_change IS
    'A changed document on its way into category_assignment_logs (the audit trail''s batch insert)';

DROP FUNCTION @extschema@.legacy_backup_log_update();
DROP FUNCTION @extschema@.legacy_backup_log_insert();
DROP FUNCTION @extschema@.legacy_backup_log_delete();
CREATE FUNCTION @extschema@.legacy_backup_log_change()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'legacy_backup_log_change_wrapper';
CREATE FUNCTION @extschema@.legacy_backup_log_flush()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'legacy_backup_log_flush_wrapper';
CREATE FUNCTION @extschema@.legacy_backup_id_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'the id of a document cannot change while legacy_backup keeps its history'
        USING ERRCODE = 'LB008',
              HINT = 'Insert the document under its new id and delete the old one: both are logged.';
END $$;
COMMENT ON FUNCTION @extschema@.legacy_backup_id_guard() IS 'Trigger: refuses changing the id of a document (LB008), which would break its history';

-- 1b. The reading functions share one session check.
CREATE FUNCTION @extschema@.legacy_backup_check_session(session_id text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.legacy_backup_check_id('session_id', session_id);
    IF NOT EXISTS (SELECT 1 FROM @extschema@.legacy_import_sessions s WHERE s.id = $1)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.category_assignment_logs l WHERE l.session_id = $1) THEN
        RAISE EXCEPTION 'import session "%" does not exist', session_id USING ERRCODE = 'P0002',
            HINT = 'Check the id against legacy_import_sessions.id.';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.legacy_backup_check_session(text) IS
    'Internal: refuses an unsafe id (22023, 22004) or a session neither in legacy_import_sessions nor in the audit trail (P0002)';
REVOKE EXECUTE ON FUNCTION @extschema@.legacy_backup_check_session(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.legacy_backup_check_session(text) TO legacy_backup_reader;
CREATE OR REPLACE FUNCTION @extschema@.legacy_categorization_at(session_id text, at timestamptz)
RETURNS TABLE (document_id text, category_id text, status text, changed_by text, changed_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.legacy_backup_check_session(session_id);
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at must be a finite timestamp' USING ERRCODE = '22023';
    END IF;
    -- A document's state at `at`: the newest logged change at or before it; else the state
    -- before its first later change; else (never changed) its current row, if it existed then.
    RETURN QUERY
    WITH before AS (
        SELECT DISTINCT ON (l.document_id) l.document_id, l.new_category_id, l.new_status, l.changed_by, l.changed_at
        FROM @extschema@.category_assignment_logs l WHERE l.session_id = $1 AND l.changed_at <= $2
        ORDER BY l.document_id, l.changed_at DESC, l.id DESC
    ), later AS (
        SELECT DISTINCT ON (l.document_id) l.document_id, l.old_category_id, l.old_status
        FROM @extschema@.category_assignment_logs l WHERE l.session_id = $1 AND l.changed_at > $2
        ORDER BY l.document_id, l.changed_at, l.id
    ), state AS (
        SELECT b.document_id, b.new_category_id AS category_id, b.new_status AS status, b.changed_by, b.changed_at
        FROM before b
        UNION ALL
        SELECT a.document_id, a.old_category_id, a.old_status, NULL, NULL
        FROM later a WHERE NOT EXISTS (SELECT 1 FROM before b WHERE b.document_id = a.document_id)
        UNION ALL
        SELECT d.id, d.category_id, format('%s', d.status), NULL, NULL
        FROM @extschema@.extracted_documents d
        WHERE d.session_id = $1 AND d.created_at <= $2
          AND NOT EXISTS (SELECT 1 FROM @extschema@.category_assignment_logs l WHERE l.session_id = $1 AND l.document_id = d.id)
    )
    SELECT s.document_id, s.category_id, s.status, s.changed_by, s.changed_at
    FROM state s WHERE s.status IS NOT NULL
    ORDER BY s.document_id COLLATE "C";
END $$;
CREATE OR REPLACE FUNCTION @extschema@.legacy_session_activity(session_id text, since timestamptz DEFAULT NULL)
RETURNS TABLE (changed_by text, name text, source text, documents bigint, changes bigint,
               first_change timestamptz, last_change timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.legacy_backup_check_session(session_id);
    RETURN QUERY
    SELECT l.changed_by, nullif(btrim(concat_ws(' ', u.first_name, u.last_name)), '')::text,
           l.source, count(DISTINCT l.document_id), count(*), min(l.changed_at), max(l.changed_at)
    FROM @extschema@.category_assignment_logs l LEFT JOIN @extschema@.users u ON u.id = l.changed_by
    WHERE l.session_id = $1 AND ($2 IS NULL OR l.changed_at >= $2) AND l.source <> 'baseline'
    GROUP BY l.changed_by, u.first_name, u.last_name, l.source
    ORDER BY max(l.changed_at) DESC;
END $$;

-- 2. The guards read the names of the extension's triggers from the library.
CREATE FUNCTION @extschema@.legacy_backup_protected_triggers() RETURNS text[]
IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_protected_triggers_wrapper';
CREATE OR REPLACE FUNCTION legacy_backup.sql_drop_guard() RETURNS event_trigger
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
                                         OR (d.schema_name = '@extschema@' AND d.object_name = 'category_assignment_logs')));
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

-- The DROP guard also refuses renaming the extension's schema (its functions name it).
DROP EVENT TRIGGER legacy_backup_drop_guard;
CREATE EVENT TRIGGER legacy_backup_drop_guard ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED', 'ALTER TYPE', 'ALTER SCHEMA')
    EXECUTE FUNCTION legacy_backup.drop_guard();
COMMENT ON EVENT TRIGGER legacy_backup_drop_guard IS
    'Refuses DROP EXTENSION legacy_backup (and DROP SCHEMA … CASCADE of its schema, DROP OWNED BY its owner) while snapshots or audit-trail changes exist, renaming its schema, and renaming values of the status enums (SET legacy_backup.allow_drop = on to confirm)';

-- 3. Exports that begin on a pinned snapshot.
-- Exports under way: legacy_export_begin() pinned the session's snapshot, fresh at the time.
-- The export gate then accepts the final status change however long the upload took, as long as
-- that snapshot is still the newest and nobody changed categorization since (SNAPSHOT_OUTDATED).
-- The row goes when the session becomes Exported, is deleted, or a new begin replaces it.
CREATE TABLE legacy_backup.export_begins (
    session_id  text PRIMARY KEY,
    snapshot_id text NOT NULL REFERENCES legacy_backup.snapshots (id) ON DELETE CASCADE,
    begun_at    timestamptz NOT NULL DEFAULT statement_timestamp(),
    begun_by    text NOT NULL,
    db_role     text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE legacy_backup.export_begins IS
    'Exports under way (legacy_export_begin): the snapshot each one began on; the gate forgives that snapshot''s age, never a change since it';
SELECT pg_catalog.pg_extension_config_dump('legacy_backup.export_begins', '');
CREATE  FUNCTION @extschema@."legacy_export_begin"(
	"session_id" TEXT, /* Option < & str > */
	"actor_id" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'legacy_export_begin_wrapper';
CREATE OR REPLACE FUNCTION @extschema@.legacy_backup_export_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    actor text := coalesce(nullif(current_setting('legacy_backup.actor', true), ''), 'pg:' || session_user);
    new_status text;
    old_status text;
    skip boolean := coalesce(nullif(current_setting('legacy_backup.skip_snapshot_check', true), ''), 'off')::boolean;
    earliest timestamptz := statement_timestamp() + current_setting('legacy_backup.cleanup_delay')::interval;
    recorded timestamptz;
    verdict jsonb;
BEGIN
    -- A deleted session takes its schedule with it: a row inserted later under the same id
    -- must go through the export gate to get one.
    IF TG_OP = 'DELETE' THEN
        DELETE FROM legacy_backup.cleanup_schedule c WHERE c.session_id = OLD.id;
        DELETE FROM legacy_backup.export_begins b WHERE b.session_id = OLD.id;
        RETURN NULL;
    END IF;
    new_status := format('%s', NEW.status);
    IF TG_OP = 'UPDATE' THEN
        old_status := format('%s', OLD.status);
        -- The schedule, the snapshots and the object keys all hang on the session id.
        IF NEW.id IS DISTINCT FROM OLD.id THEN
            RAISE EXCEPTION 'the id of session "%" cannot change while legacy_backup protects it', OLD.id
                USING ERRCODE = 'LB008',
                      DETAIL = 'Its snapshots, cleanup schedule and object-storage keys are filed under that id.';
        END IF;
        -- A cleaned-up session stays cleaned up: clearing the mark would queue its cleanup again.
        IF OLD.cleaned_up_at IS NOT NULL AND NEW.cleaned_up_at IS NULL THEN
            RAISE EXCEPTION 'session "%" was cleaned up at %; that cannot be undone', OLD.id, OLD.cleaned_up_at
                USING ERRCODE = 'LB004';
        END IF;
    END IF;

    -- Files are only ever deleted for an exported session, and only the extension's cleanup (the
    -- worker, with legacy_backup.change_source = cleanup, a superuser-only setting) marks one
    -- cleaned up: a mark set by anyone else would hide files that were never deleted and keep
    -- the worker from ever deleting them.
    IF NEW.cleaned_up_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.cleaned_up_at IS NULL) THEN
        IF new_status <> 'Exported' THEN
            RAISE EXCEPTION 'session "%" cannot be marked cleaned up: it is not exported (status %)', NEW.id, new_status
                USING ERRCODE = 'LB004';
        END IF;
        -- The worker's own UPDATE fires this trigger at depth 1; a trigger of the application
        -- fired by it (and running under the same setting) is deeper.
        IF coalesce(nullif(current_setting('legacy_backup.change_source', true), ''), 'app') <> 'cleanup'
           OR pg_trigger_depth() > 1 THEN
            RAISE EXCEPTION 'cleaned_up_at of session "%" may only be set by legacy_backup''s cleanup', NEW.id
                USING ERRCODE = 'LB004',
                      DETAIL = 'The worker sets it after deleting the session''s files and checking nothing is left.',
                      HINT = 'Leave the cleanup to the worker; a partner may clean up now with legacy_cleanup_session().';
        END IF;
    END IF;

    -- Becoming Exported (an UPDATE to a row already Exported is not a new export).
    IF new_status = 'Exported' AND old_status IS DISTINCT FROM 'Exported' THEN
        verdict := @extschema@.legacy_backup_export_verdict(NEW.id);
        IF NOT (verdict->>'ready')::boolean THEN
            IF NOT skip THEN
                RAISE EXCEPTION '%', verdict->>'message'
                    USING ERRCODE = CASE verdict->>'code' WHEN 'SNAPSHOT_REQUIRED' THEN 'LB001'
                                                          WHEN 'SNAPSHOT_STALE' THEN 'LB002'
                                                          WHEN 'AUDIT_TRAIL_INACTIVE' THEN 'LB007'
                                                          ELSE 'LB003' END,
                          DETAIL = 'Reason: ' || (verdict->>'code') || '. Last snapshot: '
                                   || coalesce(verdict->>'lastSnapshotAt', 'none')
                                   || coalesce(' (' || (verdict->>'snapshotAgeMinutes') || ' minutes old)', '') || '.',
                          HINT = verdict->>'hint';
            END IF;
            IF NOT (SELECT r.rolsuper OR pg_has_role(r.oid, 'legacy_backup_admin', 'MEMBER')
                    FROM pg_roles r WHERE r.rolname = session_user) THEN
                RAISE EXCEPTION 'role "%" may not skip the export snapshot check', session_user
                    USING ERRCODE = '42501',
                          DETAIL = 'The export would have been refused: ' || (verdict->>'message'),
                          HINT = 'Only superusers and members of legacy_backup_admin may set legacy_backup.skip_snapshot_check.';
            END IF;
            PERFORM @extschema@.legacy_backup_audit(NEW.id, actor, 'EXPORT_SNAPSHOT_CHECK_SKIPPED',
                jsonb_build_object('role', session_user, 'code', verdict->'code', 'message', verdict->'message',
                                   'snapshotId', verdict->'snapshotId', 'snapshotKey', verdict->'snapshotKey'));
        END IF;
        IF NEW.cleanup_scheduled_at IS NULL OR NEW.cleanup_scheduled_at < earliest THEN
            RAISE EXCEPTION 'export of session "%" refused: its cleanup would be scheduled for %, before %',
                            NEW.id, coalesce(NEW.cleanup_scheduled_at::text, 'no time at all'), earliest
                USING ERRCODE = 'LB005',
                      DETAIL = 'legacy_backup.cleanup_delay is ' || current_setting('legacy_backup.cleanup_delay')
                               || '; something changed cleanup_scheduled_at after the export gate set it.',
                      HINT = 'Leave cleanup_scheduled_at to the extension; a partner may postpone it with legacy_postpone_cleanup().';
        END IF;
        -- The export that began on a pinned snapshot is done.
        DELETE FROM legacy_backup.export_begins b WHERE b.session_id = NEW.id;
        INSERT INTO legacy_backup.cleanup_schedule AS c (session_id, scheduled_at, set_by)
        VALUES (NEW.id, NEW.cleanup_scheduled_at, actor)
        ON CONFLICT (session_id) DO UPDATE
            SET scheduled_at = EXCLUDED.scheduled_at, set_by = EXCLUDED.set_by, exported_at = now(),
                db_role = session_user, updated_at = now();
        PERFORM @extschema@.legacy_backup_audit(NEW.id, actor, 'EXPORT_SNAPSHOT_VERIFIED',
            jsonb_build_object('snapshotId', verdict->'snapshotId', 'snapshotKey', verdict->'snapshotKey',
                               'snapshotAt', verdict->'lastSnapshotAt', 'snapshotAgeMinutes', verdict->'snapshotAgeMinutes',
                               'verdict', verdict->'code', 'checkSkipped', NOT (verdict->>'ready')::boolean,
                               'exportBegunAt', verdict->'exportBegunAt',
                               'cleanupScheduledAt', NEW.cleanup_scheduled_at));
        RETURN NULL;
    END IF;

    -- Leaving Exported (a re-opened session) cancels the scheduled cleanup.
    IF old_status = 'Exported' AND new_status <> 'Exported' THEN
        DELETE FROM legacy_backup.cleanup_schedule c WHERE c.session_id = NEW.id RETURNING c.scheduled_at INTO recorded;
        IF NEW.cleaned_up_at IS NULL AND NEW.cleanup_scheduled_at IS NOT NULL THEN
            RAISE EXCEPTION 'session "%" left Exported but keeps a cleanup scheduled for %', NEW.id, NEW.cleanup_scheduled_at
                USING ERRCODE = 'LB005',
                      HINT = 'Leave cleanup_scheduled_at to the extension: re-opening a session cancels its cleanup.';
        END IF;
        IF recorded IS NOT NULL AND NEW.cleaned_up_at IS NULL THEN
            PERFORM @extschema@.legacy_backup_audit(NEW.id, actor, 'EXPORT_CLEANUP_CANCELLED',
                jsonb_build_object('cancelledCleanupScheduledAt', recorded, 'newStatus', new_status));
        END IF;
        RETURN NULL;
    END IF;

    -- Any other change of cleanup_scheduled_at must be the extension's own (it mirrors the record).
    IF TG_OP = 'INSERT' OR NEW.cleanup_scheduled_at IS DISTINCT FROM OLD.cleanup_scheduled_at THEN
        SELECT c.scheduled_at INTO recorded FROM legacy_backup.cleanup_schedule c WHERE c.session_id = NEW.id;
        IF NEW.cleanup_scheduled_at IS DISTINCT FROM recorded THEN
            RAISE EXCEPTION 'cleanup_scheduled_at of session "%" may only be changed by legacy_backup', NEW.id
                USING ERRCODE = 'LB005',
                      DETAIL = 'The extension scheduled it for ' || coalesce(recorded::text, 'no time (not exported)')
                               || '; the statement set ' || coalesce(NEW.cleanup_scheduled_at::text, 'NULL') || '.',
                      HINT = 'Exporting schedules it (legacy_backup.cleanup_delay later); a partner may postpone it with legacy_postpone_cleanup(); re-opening cancels it.';
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- 4. Privileges and comments of the new functions (as sql/finalize.sql gives them).
REVOKE EXECUTE ON FUNCTION @extschema@.legacy_export_begin(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.legacy_export_begin(text, text) TO legacy_backup_operator;
REVOKE EXECUTE ON FUNCTION @extschema@.legacy_backup_log_change(), @extschema@.legacy_backup_log_flush(),
                           @extschema@.legacy_backup_id_guard() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.legacy_backup_log_change() IS
    'Trigger (row: UPDATE and INSERT with a WHEN, DELETE): buffers the change for the audit trail';
COMMENT ON FUNCTION @extschema@.legacy_backup_log_flush() IS
    'Trigger (statement): writes the audit-trail rows buffered by legacy_backup_log_change, in one INSERT';

COMMENT ON FUNCTION @extschema@.legacy_backup_protected_triggers() IS
    'Names of the extension''s triggers on application tables, for the event triggers that guard them';
COMMENT ON FUNCTION @extschema@.legacy_export_begin(text, text) IS
    'Begins an export: takes a snapshot if the newest is missing, old or outdated, pins it, returns the verdict; the final status change is then not refused for the snapshot''s age';

-- 5. The new triggers on the application's tables, when they exist (as at CREATE EXTENSION).
SELECT @extschema@.legacy_backup_on_create();
SELECT pg_catalog.set_config('legacy_backup.allow_drop', 'off', true);

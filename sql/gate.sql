-- The export gate on legacy_import_sessions, in two triggers:
--
-- legacy_backup_export_gate (BEFORE, runs as the role that changed the row): fills in the
--   columns an export sets, exported_at and the earliest cleanup_scheduled_at the extension
--   allows (now() + legacy_backup.cleanup_delay, or a later time the statement asked for), and
--   clears the schedule when a session leaves Exported. It reads no data of the extension.
-- legacy_backup_export_check (AFTER, SECURITY DEFINER): sees the row as stored, after every BEFORE
--   trigger, the application's included. It refuses an export without a fresh snapshot, records
--   the cleanup schedule in legacy_backup.cleanup_schedule (the only schedule the worker trusts),
--   refuses any other change of cleanup_scheduled_at, and writes the audit rows. It evaluates no
--   operator, cast or function of the application: names are qualified, search_path is
--   pg_catalog only, enums are read with format(), and the audit rows are written by
--   legacy_backup_audit() as the audit table's owner.
--
-- SQLSTATEs (class LB): LB001 snapshot required, LB002 snapshot stale, LB003 snapshot outdated,
-- LB004 cleanup of a session that is not exported, LB005 cleanup schedule changed outside the
-- extension, LB007 audit trail not recording, LB008 a session id changed, LB009 TRUNCATE
-- (sql/audit.sql).
--
-- Times are statement_timestamp(), not now(): a transaction left open for a week must not
-- schedule a cleanup that is already due when it commits, nor find a week-old snapshot fresh.

CREATE FUNCTION @extschema@.legacy_backup_export_gate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Enums are read through their output function, never cast (docs/security.md).
    new_status text := format('%s', NEW.status);
    old_status text := CASE WHEN TG_OP = 'UPDATE' THEN format('%s', OLD.status) END;
BEGIN
    IF new_status = 'Exported' AND (TG_OP = 'INSERT' OR old_status IS DISTINCT FROM 'Exported') THEN
        NEW.exported_at := coalesce(NEW.exported_at, statement_timestamp());
        NEW.cleanup_scheduled_at := greatest(NEW.cleanup_scheduled_at,
                                             statement_timestamp() + current_setting('legacy_backup.cleanup_delay')::interval);
    ELSIF TG_OP = 'UPDATE' AND old_status = 'Exported' AND new_status IS DISTINCT FROM 'Exported'
          AND NEW.cleaned_up_at IS NULL THEN
        NEW.cleanup_scheduled_at := NULL;
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION @extschema@.legacy_backup_export_gate() IS
    'Trigger (BEFORE): on export sets exported_at and the earliest allowed cleanup_scheduled_at; on re-open clears the schedule';

CREATE FUNCTION @extschema@.legacy_backup_export_check() RETURNS trigger
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
    -- A deleted session's files are deleted cleanup_delay after the delete (an exported one keeps
    -- its schedule), whether or not it was exported; the schedule outlives the row. The worker
    -- acts on it only while no row of that id exists (a row inserted later under the same id
    -- gets a schedule only through the export gate). legacy_backup_session_delete took the
    -- final snapshot before the row went.
    IF TG_OP = 'DELETE' THEN
        DELETE FROM legacy_backup.export_begins b WHERE b.session_id = OLD.id;
        -- Also after a cleanup: whatever was put under its prefixes since goes too.
        INSERT INTO legacy_backup.cleanup_schedule AS c (session_id, scheduled_at, exported_at, set_by, grace, deleted_at)
        VALUES (OLD.id, earliest, NULL, actor, current_setting('legacy_backup.cleanup_delay')::interval, statement_timestamp())
        ON CONFLICT (session_id) DO UPDATE
            -- An exported session not yet cleaned up keeps its schedule; any other row (a cleanup
            -- done, an earlier delete of the same id) starts again, never earlier than it was (a
            -- partner may have postponed it).
            SET scheduled_at = CASE WHEN c.deleted_at IS NULL AND OLD.cleaned_up_at IS NULL THEN c.scheduled_at
                                    ELSE greatest(c.scheduled_at, EXCLUDED.scheduled_at) END,
                visible_at = CASE WHEN c.deleted_at IS NULL AND OLD.cleaned_up_at IS NULL THEN c.visible_at END,
                grace = CASE WHEN c.deleted_at IS NULL AND OLD.cleaned_up_at IS NULL THEN c.grace ELSE EXCLUDED.grace END,
                exported_at = CASE WHEN c.deleted_at IS NULL THEN c.exported_at END,
                deleted_at = EXCLUDED.deleted_at, cleaned_up_at = NULL,
                set_by = EXCLUDED.set_by, db_role = session_user, updated_at = now()
        RETURNING c.scheduled_at INTO recorded;
        PERFORM @extschema@.legacy_backup_audit(OLD.id, actor, 'SESSION_DELETED',
            jsonb_build_object('status', format('%s', OLD.status), 'cleanupScheduledAt', recorded,
                               'cleanedUpAt', OLD.cleaned_up_at,
                               'finalSnapshotId', (SELECT n.id FROM legacy_backup.snapshots n WHERE n.session_id = OLD.id
                                                   ORDER BY n.snapshot_at DESC LIMIT 1)));
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
        -- The grace counts again from when this export becomes visible (the worker stamps it).
        INSERT INTO legacy_backup.cleanup_schedule AS c (session_id, scheduled_at, set_by, grace)
        VALUES (NEW.id, NEW.cleanup_scheduled_at, actor, current_setting('legacy_backup.cleanup_delay')::interval)
        ON CONFLICT (session_id) DO UPDATE
            SET scheduled_at = EXCLUDED.scheduled_at, set_by = EXCLUDED.set_by, exported_at = now(),
                db_role = session_user, updated_at = now(), visible_at = NULL, grace = EXCLUDED.grace,
                deleted_at = NULL, cleaned_up_at = NULL;
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
        SELECT c.scheduled_at INTO recorded FROM legacy_backup.cleanup_schedule c
        WHERE c.session_id = NEW.id AND c.deleted_at IS NULL;
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
COMMENT ON FUNCTION @extschema@.legacy_backup_export_check() IS
    'Trigger (AFTER): refuses Exported without a fresh snapshot (LB001-LB003, LB007), records the cleanup schedule, refuses other schedule changes (LB005), guards cleaned_up_at (LB004) and ids (LB008), keeps a deleted session''s files scheduled for cleanup; audited';

-- BEFORE DELETE on legacy_import_sessions: the final snapshot of a session that holds any work
-- (a document, a category, a logged change), in the deleting transaction, while its documents
-- still exist. The schedule that deletes its files later is recorded by
-- legacy_backup_export_check (AFTER DELETE), which fires only if the row is really deleted.
CREATE FUNCTION @extschema@.legacy_backup_session_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM legacy_backup.final_snapshot(OLD.id,
        coalesce(nullif(current_setting('legacy_backup.actor', true), ''), 'pg:' || session_user));
    RETURN OLD;
END $$;
COMMENT ON FUNCTION @extschema@.legacy_backup_session_delete() IS
    'Trigger (BEFORE DELETE): takes the final snapshot of a session that holds any work, inside the deleting transaction';

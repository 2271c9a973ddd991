-- The export gate: a trigger on legacy_import_sessions that refuses to mark a session Exported
-- unless a fresh snapshot holds its current categorization, and that schedules the cleanup for
-- later instead of anything being deleted. The verdict itself is computed by
-- legacy_backup_export_verdict (src/gate.rs), the same code as legacy_export_readiness.
--
-- SQLSTATEs (class LB): LB001 snapshot required, LB002 snapshot stale, LB003 snapshot outdated,
-- LB004 cleanup of a session that is not exported.

CREATE FUNCTION @extschema@.legacy_backup_export_gate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, @extschema@, pg_temp AS $$
DECLARE
    verdict jsonb;
    actor text := coalesce(nullif(current_setting('legacy_backup.actor', true), ''), 'pg:' || current_user);
    skip boolean := coalesce(nullif(current_setting('legacy_backup.skip_snapshot_check', true), ''), 'off')::boolean;
    may_skip boolean;
BEGIN
    -- Files are only ever deleted for an exported session.
    IF TG_OP = 'UPDATE' AND NEW.cleaned_up_at IS NOT NULL AND OLD.cleaned_up_at IS NULL
       AND NEW.status::text <> 'Exported' THEN
        RAISE EXCEPTION 'session "%" cannot be marked cleaned up: it is not exported (status %)', NEW.id, NEW.status
            USING ERRCODE = 'LB004';
    END IF;

    -- Leaving Exported (a re-opened session) cancels the scheduled cleanup.
    IF TG_OP = 'UPDATE' AND OLD.status::text = 'Exported' AND NEW.status::text <> 'Exported' THEN
        IF NEW.cleanup_scheduled_at IS NOT NULL AND NEW.cleaned_up_at IS NULL THEN
            INSERT INTO legacy_import_audit_logs (id, session_id, user_id, action, details, "timestamp")
            VALUES (gen_random_uuid()::text, NEW.id, actor, 'EXPORT_CLEANUP_CANCELLED',
                    jsonb_build_object('cancelledCleanupScheduledAt', NEW.cleanup_scheduled_at,
                                       'newStatus', NEW.status::text), now());
            NEW.cleanup_scheduled_at := NULL;
        END IF;
        RETURN NEW;
    END IF;

    -- Becoming Exported (an UPDATE to a row already Exported is not a new export).
    IF NEW.status::text = 'Exported' AND (TG_OP = 'INSERT' OR OLD.status::text <> 'Exported') THEN
        verdict := legacy_backup_export_verdict(NEW.id);
        IF NOT (verdict->>'ready')::boolean THEN
            IF NOT skip THEN
                RAISE EXCEPTION '%', verdict->>'message'
                    USING ERRCODE = CASE verdict->>'code' WHEN 'SNAPSHOT_REQUIRED' THEN 'LB001'
                                                          WHEN 'SNAPSHOT_STALE' THEN 'LB002'
                                                          ELSE 'LB003' END,
                          DETAIL = 'Reason: ' || (verdict->>'code') || '. Last snapshot: '
                                   || coalesce(verdict->>'lastSnapshotAt', 'none')
                                   || coalesce(' (' || (verdict->>'snapshotAgeMinutes') || ' minutes old)', '') || '.',
                          HINT = verdict->>'hint';
            END IF;
            may_skip := (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user)
                        OR pg_has_role(current_user, 'legacy_backup_admin', 'MEMBER');
            IF NOT may_skip THEN
                RAISE EXCEPTION 'role "%" may not skip the export snapshot check', current_user
                    USING ERRCODE = '42501',
                          DETAIL = 'The export would have been refused: ' || (verdict->>'message'),
                          HINT = 'Only superusers and members of legacy_backup_admin may set legacy_backup.skip_snapshot_check.';
            END IF;
            INSERT INTO legacy_import_audit_logs (id, session_id, user_id, action, details, "timestamp")
            VALUES (gen_random_uuid()::text, NEW.id, actor, 'EXPORT_SNAPSHOT_CHECK_SKIPPED',
                    jsonb_build_object('role', current_user, 'code', verdict->'code', 'message', verdict->'message',
                                       'snapshotId', verdict->'snapshotId', 'snapshotKey', verdict->'snapshotKey'), now());
        END IF;
        NEW.exported_at := coalesce(NEW.exported_at, now());
        NEW.cleanup_scheduled_at := coalesce(NEW.cleanup_scheduled_at,
                                             now() + current_setting('legacy_backup.cleanup_delay')::interval);
        INSERT INTO legacy_import_audit_logs (id, session_id, user_id, action, details, "timestamp")
        VALUES (gen_random_uuid()::text, NEW.id, actor, 'EXPORT_SNAPSHOT_VERIFIED',
                jsonb_build_object('snapshotId', verdict->'snapshotId', 'snapshotKey', verdict->'snapshotKey',
                                   'snapshotAt', verdict->'lastSnapshotAt', 'snapshotAgeMinutes', verdict->'snapshotAgeMinutes',
                                   'verdict', verdict->'code', 'checkSkipped', NOT (verdict->>'ready')::boolean,
                                   'cleanupScheduledAt', NEW.cleanup_scheduled_at), now());
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION @extschema@.legacy_backup_export_gate() IS
    'Trigger: refuses Exported without a fresh snapshot (LB001-LB003), schedules cleanup, cancels it on re-open, guards cleaned_up_at (LB004)';

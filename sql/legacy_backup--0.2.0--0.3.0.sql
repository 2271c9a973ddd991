-- legacy_backup 0.2.0 -> 0.3.0 (ALTER EXTENSION legacy_backup UPDATE TO '0.3.0').
-- Tested by tests/integration/t_upgrade.sh: a database updated from 0.1.0 through 0.2.0 must have
-- exactly the objects of a fresh 0.3.0 install (tests/upgrade/catalog.sql) and keep its data.
-- Upgrade scripts cannot include files: the function bodies below repeat sql/audit.sql,
-- sql/gate.sql and sql/guard.sql; the catalog-equality test fails on any drift.
--
-- 0.3.0 is the least-privilege release (docs/security.md): every extension function runs with
-- search_path = pg_catalog, pg_temp and qualified names; application tables are written as their
-- owner; the export check is an AFTER trigger with the extension's own cleanup schedule; the
-- guards cover DROP OWNED, cascades and the extension's triggers; the secret access key is no
-- longer a setting (the library no longer defines legacy_backup.r2_secret_access_key).





-- 1. The extension's own cleanup schedule, filled from the sessions exported under 0.2.0.
-- When each exported session's files may be deleted: the extension's own record, written only by
-- the export check (sql/gate.sql), legacy_postpone_cleanup and a re-open. The worker trusts
-- nothing else; the application's column legacy_import_sessions.cleanup_scheduled_at mirrors it
-- and any other change of that column is refused (LB005).
CREATE TABLE legacy_backup.cleanup_schedule (
    session_id   text PRIMARY KEY,
    scheduled_at timestamptz NOT NULL,
    exported_at  timestamptz NOT NULL DEFAULT now(),
    set_by       text NOT NULL,
    db_role      text NOT NULL DEFAULT session_user,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE legacy_backup.cleanup_schedule IS
    'Scheduled cleanup per exported session, as the extension set it (export, postponement); the worker reads only this';
SELECT pg_catalog.pg_extension_config_dump('legacy_backup.cleanup_schedule', '');


DO $$
BEGIN
    IF to_regclass('@extschema@.legacy_import_sessions') IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_catalog.pg_attribute
           WHERE attrelid = '@extschema@.legacy_import_sessions'::regclass AND attname = 'cleanup_scheduled_at' AND NOT attisdropped) THEN
        INSERT INTO legacy_backup.cleanup_schedule (session_id, scheduled_at, exported_at, set_by)
        SELECT s.id, s.cleanup_scheduled_at, coalesce(s.exported_at, pg_catalog.now()), 'upgrade to 0.3.0'
        FROM @extschema@.legacy_import_sessions s
        WHERE pg_catalog.format('%s', s.status) OPERATOR(pg_catalog.=) 'Exported'
          AND s.cleaned_up_at IS NULL AND s.cleanup_scheduled_at IS NOT NULL;
    END IF;
END $$;





-- 2. The audit trail: the authenticated role beside every change; functions with search_path
-- pg_catalog only; TRUNCATE logged.
ALTER TABLE @extschema@.category_assignment_logs ADD COLUMN db_role text;

COMMENT ON COLUMN @extschema@.category_assignment_logs.db_role IS
    'The database role that was logged in (session_user) when the change was made: changed_by is the application''s claim, this is who PostgreSQL authenticated';

CREATE OR REPLACE FUNCTION @extschema@.legacy_backup_log_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    actor text := nullif(current_setting('legacy_backup.actor', true), '');
    src text := coalesce(nullif(current_setting('legacy_backup.change_source', true), ''), 'app');
    at timestamptz := clock_timestamp();
    role_name text := 'pg:' || session_user;
BEGIN
    IF pg_trigger_depth() > 1 AND src <> 'app' THEN
        src := 'app';
        actor := NULL;
    END IF;
    -- Old and new rows are paired by id: a statement that changes ids would escape the log.
    IF EXISTS (SELECT 1 FROM old_rows o WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id)) THEN
        RAISE EXCEPTION 'the id of a document cannot change while legacy_backup keeps its history'
            USING ERRCODE = 'LB008',
                  HINT = 'Insert the document under its new id and delete the old one: both are logged.';
    END IF;
    INSERT INTO @extschema@.category_assignment_logs
        (session_id, document_id, old_category_id, new_category_id, old_status, new_status,
         old_categorized_by, new_categorized_by, old_categorized_at, new_categorized_at,
         changed_by, attribution, changed_at, source, db_role)
    SELECT n.session_id, n.id, o.category_id, n.category_id, format('%s', o.status), format('%s', n.status),
           o.categorized_by, n.categorized_by, o.categorized_at, n.categorized_at,
           CASE a.how WHEN 'setting' THEN actor WHEN 'categorized_by' THEN n.categorized_by ELSE role_name END,
           a.how,
           at, src, session_user
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    -- How the change is attributed, decided once: changed_by follows from it.
    CROSS JOIN LATERAL (
        SELECT CASE WHEN actor IS NOT NULL THEN 'setting'
                    WHEN n.categorized_by IS NOT NULL
                         AND (n.categorized_by IS DISTINCT FROM o.categorized_by
                              OR n.categorized_at IS DISTINCT FROM o.categorized_at) THEN 'categorized_by'
                    ELSE 'db_user' END AS how) a
    WHERE n.category_id IS DISTINCT FROM o.category_id OR format('%s', n.status) IS DISTINCT FROM format('%s', o.status);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.legacy_backup_log_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    actor text := nullif(current_setting('legacy_backup.actor', true), '');
    src text := coalesce(nullif(current_setting('legacy_backup.change_source', true), ''), 'app');
BEGIN
    IF pg_trigger_depth() > 1 AND src <> 'app' THEN
        src := 'app';
        actor := NULL;
    END IF;
    -- Only documents that arrive already categorized (or skipped) change categorization.
    INSERT INTO @extschema@.category_assignment_logs
        (session_id, document_id, new_category_id, new_status, new_categorized_by, new_categorized_at,
         changed_by, attribution, changed_at, source, db_role)
    SELECT n.session_id, n.id, n.category_id, format('%s', n.status), n.categorized_by, n.categorized_at,
           coalesce(actor, n.categorized_by, 'pg:' || session_user),
           CASE WHEN actor IS NOT NULL THEN 'setting' WHEN n.categorized_by IS NOT NULL THEN 'categorized_by' ELSE 'db_user' END,
           clock_timestamp(), src, session_user
    FROM new_rows n
    WHERE n.category_id IS NOT NULL OR format('%s', n.status) <> 'Uncategorized';
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.legacy_backup_log_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    actor text := nullif(current_setting('legacy_backup.actor', true), '');
    src text := coalesce(nullif(current_setting('legacy_backup.change_source', true), ''), 'app');
BEGIN
    IF pg_trigger_depth() > 1 AND src <> 'app' THEN
        src := 'app';
        actor := NULL;
    END IF;
    -- Every deleted document is logged, so the state at an earlier moment can be rebuilt.
    INSERT INTO @extschema@.category_assignment_logs
        (session_id, document_id, old_category_id, old_status, old_categorized_by, old_categorized_at,
         changed_by, attribution, changed_at, source, db_role)
    SELECT o.session_id, o.id, o.category_id, format('%s', o.status), o.categorized_by, o.categorized_at,
           coalesce(actor, 'pg:' || session_user),
           CASE WHEN actor IS NOT NULL THEN 'setting' ELSE 'db_user' END,
           clock_timestamp(), src, session_user
    FROM old_rows o;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.legacy_backup_truncate_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE % is refused while legacy_backup protects it', TG_TABLE_NAME
        USING ERRCODE = 'LB009',
              DETAIL = 'TRUNCATE would remove rows without the audit trail (or the export gate) seeing them.',
              HINT = 'Use DELETE: every deleted document is logged. A superuser may DROP the trigger with legacy_backup.allow_drop = on.';
END $$;

CREATE OR REPLACE FUNCTION @extschema@.legacy_document_history(document_id text)
RETURNS SETOF @extschema@.category_assignment_logs
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    session text;
BEGIN
    PERFORM @extschema@.legacy_backup_check_id('document_id', document_id);
    -- The document's session leads the index; a deleted document's session is found in the log
    -- (a scan, on that rare path only).
    session := (SELECT d.session_id FROM @extschema@.extracted_documents d WHERE d.id = $1);
    IF session IS NULL THEN
        session := (SELECT l.session_id FROM @extschema@.category_assignment_logs l WHERE l.document_id = $1 LIMIT 1);
    END IF;
    IF session IS NULL THEN
        RAISE EXCEPTION 'document "%" is unknown', document_id USING ERRCODE = 'P0002',
            HINT = 'It is neither in extracted_documents nor in the audit trail.';
    END IF;
    RETURN QUERY
    SELECT l.* FROM @extschema@.category_assignment_logs l
    WHERE l.session_id = coalesce(
              (SELECT d.session_id FROM @extschema@.extracted_documents d WHERE d.id = $1),
              (SELECT l2.session_id FROM @extschema@.category_assignment_logs l2 WHERE l2.document_id = $1 LIMIT 1))
      AND l.document_id = $1
    ORDER BY l.changed_at, l.id;
END $$;

CREATE OR REPLACE FUNCTION @extschema@.legacy_categorization_at(session_id text, at timestamptz)
RETURNS TABLE (document_id text, category_id text, status text, changed_by text, changed_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.legacy_backup_check_id('session_id', session_id);
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at must be a finite timestamp' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM @extschema@.legacy_import_sessions s WHERE s.id = $1)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.category_assignment_logs l WHERE l.session_id = $1) THEN
        RAISE EXCEPTION 'import session "%" does not exist', session_id USING ERRCODE = 'P0002',
            HINT = 'Check the id against legacy_import_sessions.id.';
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
    PERFORM @extschema@.legacy_backup_check_id('session_id', session_id);
    IF NOT EXISTS (SELECT 1 FROM @extschema@.legacy_import_sessions s WHERE s.id = $1)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.category_assignment_logs l WHERE l.session_id = $1) THEN
        RAISE EXCEPTION 'import session "%" does not exist', session_id USING ERRCODE = 'P0002',
            HINT = 'Check the id against legacy_import_sessions.id.';
    END IF;
    RETURN QUERY
    SELECT l.changed_by, nullif(btrim(concat_ws(' ', u.first_name, u.last_name)), '')::text,
           l.source, count(DISTINCT l.document_id), count(*), min(l.changed_at), max(l.changed_at)
    FROM @extschema@.category_assignment_logs l LEFT JOIN @extschema@.users u ON u.id = l.changed_by
    WHERE l.session_id = $1 AND ($2 IS NULL OR l.changed_at >= $2) AND l.source <> 'baseline'
    GROUP BY l.changed_by, u.first_name, u.last_name, l.source
    ORDER BY max(l.changed_at) DESC;
END $$;

COMMENT ON FUNCTION @extschema@.legacy_backup_log_update() IS 'Trigger: logs category/status changes of extracted_documents (statement level, transition tables)';
COMMENT ON FUNCTION @extschema@.legacy_backup_log_insert() IS 'Trigger: logs extracted_documents inserted already categorized or skipped';
COMMENT ON FUNCTION @extschema@.legacy_backup_log_delete() IS 'Trigger: logs deleted extracted_documents';
COMMENT ON FUNCTION @extschema@.legacy_backup_truncate_guard() IS 'Trigger: refuses TRUNCATE of extracted_documents and legacy_import_sessions (LB009); DELETE is logged';
COMMENT ON FUNCTION @extschema@.legacy_document_history(text) IS
    'Every logged change of one document, oldest first';
COMMENT ON FUNCTION @extschema@.legacy_categorization_at(text, timestamptz) IS
    'Every document of a session with its category and status as of a moment, rebuilt from the audit trail';
COMMENT ON FUNCTION @extschema@.legacy_session_activity(text, timestamptz) IS
    'Who changed how many documents of a session, and when (baseline rows excluded)';


-- 3. The export gate: BEFORE fills the columns, AFTER (SECURITY DEFINER) decides.

CREATE OR REPLACE FUNCTION @extschema@.legacy_backup_export_gate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.status = 'Exported' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'Exported') THEN
        NEW.exported_at := coalesce(NEW.exported_at, statement_timestamp());
        NEW.cleanup_scheduled_at := greatest(NEW.cleanup_scheduled_at,
                                             statement_timestamp() + current_setting('legacy_backup.cleanup_delay')::interval);
    ELSIF TG_OP = 'UPDATE' AND OLD.status = 'Exported' AND NEW.status IS DISTINCT FROM 'Exported'
          AND NEW.cleaned_up_at IS NULL THEN
        NEW.cleanup_scheduled_at := NULL;
    END IF;
    RETURN NEW;
END $$;

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

    -- Files are only ever deleted for an exported session.
    IF NEW.cleaned_up_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.cleaned_up_at IS NULL)
       AND new_status <> 'Exported' THEN
        RAISE EXCEPTION 'session "%" cannot be marked cleaned up: it is not exported (status %)', NEW.id, new_status
            USING ERRCODE = 'LB004';
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
        INSERT INTO legacy_backup.cleanup_schedule AS c (session_id, scheduled_at, set_by)
        VALUES (NEW.id, NEW.cleanup_scheduled_at, actor)
        ON CONFLICT (session_id) DO UPDATE
            SET scheduled_at = EXCLUDED.scheduled_at, set_by = EXCLUDED.set_by, exported_at = now(),
                db_role = session_user, updated_at = now();
        PERFORM @extschema@.legacy_backup_audit(NEW.id, actor, 'EXPORT_SNAPSHOT_VERIFIED',
            jsonb_build_object('snapshotId', verdict->'snapshotId', 'snapshotKey', verdict->'snapshotKey',
                               'snapshotAt', verdict->'lastSnapshotAt', 'snapshotAgeMinutes', verdict->'snapshotAgeMinutes',
                               'verdict', verdict->'code', 'checkSkipped', NOT (verdict->>'ready')::boolean,
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

COMMENT ON FUNCTION @extschema@.legacy_backup_export_gate() IS
    'Trigger (BEFORE): on export sets exported_at and the earliest allowed cleanup_scheduled_at; on re-open clears the schedule';
COMMENT ON FUNCTION @extschema@.legacy_backup_export_check() IS
    'Trigger (AFTER): refuses Exported without a fresh snapshot (LB001-LB003, LB007), records the cleanup schedule, refuses other schedule changes (LB005), guards cleaned_up_at (LB004) and ids (LB008), drops the schedule of a deleted session; audited';


-- 4. The guards: DROP OWNED at start; the sql_drop backstop and the trigger guard are new.
DROP EVENT TRIGGER legacy_backup_drop_guard;

CREATE OR REPLACE FUNCTION legacy_backup.drop_guard() RETURNS event_trigger
    LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'legacy_backup_drop_guard';
COMMENT ON FUNCTION legacy_backup.drop_guard() IS
    'Event trigger: refuses DROP EXTENSION legacy_backup (and DROP SCHEMA … CASCADE, DROP OWNED BY its owner) while snapshots or audit-trail changes exist, unless legacy_backup.allow_drop is on';
REVOKE ALL ON FUNCTION legacy_backup.drop_guard() FROM PUBLIC;
CREATE EVENT TRIGGER legacy_backup_drop_guard ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED', 'ALTER TYPE')
    EXECUTE FUNCTION legacy_backup.drop_guard();
COMMENT ON EVENT TRIGGER legacy_backup_drop_guard IS
    'Refuses DROP EXTENSION legacy_backup (and DROP SCHEMA … CASCADE of its schema, DROP OWNED BY its owner) while snapshots or audit-trail changes exist (SET legacy_backup.allow_drop = on to confirm)';

CREATE FUNCTION legacy_backup.sql_drop_guard() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lost text;
    trigger_names text[] := ARRAY['legacy_backup_log_update', 'legacy_backup_log_insert', 'legacy_backup_log_delete',
                                  'legacy_backup_truncate_guard', 'legacy_backup_session_truncate_guard',
                                  'legacy_backup_export_gate', 'legacy_backup_export_gate_insert',
                                  'legacy_backup_export_check', 'legacy_backup_export_check_insert',
                                  'legacy_backup_export_check_delete'];
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
    -- Tables other than the two carrying the triggers (under any name they now have) and their
    -- children are none of our business.
    IF tg_tag IN ('ALTER TABLE', 'CREATE TABLE') AND NOT EXISTS (
           SELECT 1 FROM pg_event_trigger_ddl_commands() c
           WHERE c.classid = 'pg_catalog.pg_class'::regclass
             AND (c.objid IN (to_regclass('@extschema@.extracted_documents'), to_regclass('@extschema@.legacy_import_sessions'))
                  OR EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                             WHERE t.tgrelid = c.objid AND p.proname LIKE 'legacy\_backup\_%'
                               AND p.pronamespace = '@extschema@'::regnamespace)
                  OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.objid
                             AND i.inhparent IN (to_regclass('@extschema@.extracted_documents'),
                                                 to_regclass('@extschema@.legacy_import_sessions'))))) THEN
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


-- 5. Functions in Rust: search_path pg_catalog only; the verdict no longer SECURITY DEFINER (only
-- the export check calls it); postponing writes the extension's schedule, so it is.
ALTER FUNCTION @extschema@.legacy_backup_attach() SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_backup_export_verdict(text) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_backup_export_verdict(text) SECURITY INVOKER;
ALTER FUNCTION @extschema@.legacy_backup_health() SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_backup_on_create() SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_cleanup_session(text, text, text) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_export_readiness(text) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_postpone_cleanup(text, text, timestamptz) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_postpone_cleanup(text, text, timestamptz) SECURITY DEFINER;
ALTER FUNCTION @extschema@.legacy_restore_snapshot(text, text, boolean) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_snapshot(text) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_snapshot_fetch(text) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_snapshot_import(json, text, boolean) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_snapshot_take(text, text) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_snapshot_verify(text) SET search_path TO pg_catalog, pg_temp;
ALTER FUNCTION @extschema@.legacy_undo_last_categorization(text, text) SET search_path TO pg_catalog, pg_temp;

-- The id rule now has one home, in Rust (src/ids.rs).
CREATE OR REPLACE FUNCTION @extschema@."legacy_backup_check_id"(
	"param" TEXT,
	"value" TEXT
) RETURNS void
IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'legacy_backup_check_id_wrapper';

CREATE FUNCTION @extschema@."legacy_backup_audit"(
	"session_id" TEXT,
	"user_id" TEXT,
	"action" TEXT,
	"details" jsonb
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'legacy_backup_audit_wrapper';

CREATE FUNCTION @extschema@."legacy_backup_trigger_problems"() RETURNS TABLE (
	"trigger_name" TEXT,
	"problem" TEXT
)
STRICT STABLE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'legacy_backup_trigger_problems_wrapper';

-- 6. Comments and privileges (as sql/finalize.sql).

COMMENT ON FUNCTION @extschema@.legacy_backup_export_verdict(text) IS
    'Internal: the export check trigger''s verdict (not executable by PUBLIC)';

COMMENT ON FUNCTION @extschema@.legacy_backup_audit(text, text, text, jsonb) IS
    'Internal: writes a legacy_import_audit_logs row as that table''s owner, with the database role (not executable by PUBLIC)';

COMMENT ON FUNCTION @extschema@.legacy_backup_trigger_problems() IS
    'The extension''s triggers on application tables that exist but are disabled, replication-only, replaced or renamed (empty when all is well)';

COMMENT ON FUNCTION @extschema@.legacy_backup_check_id(text, text) IS
    'Internal: the id rule (src/ids.rs) for the extension''s SQL-language functions';

REVOKE EXECUTE ON FUNCTION @extschema@.legacy_backup_log_update(), @extschema@.legacy_backup_log_insert(),
                           @extschema@.legacy_backup_log_delete(), @extschema@.legacy_backup_truncate_guard(),
                           @extschema@.legacy_backup_export_gate(), @extschema@.legacy_backup_export_check() FROM PUBLIC;

-- Called only by the export check trigger, which runs as the extension's owner.
REVOKE EXECUTE ON FUNCTION @extschema@.legacy_backup_export_verdict(text),
                           @extschema@.legacy_backup_audit(text, text, text, jsonb) FROM PUBLIC;


-- 7. Attach again: creates the new triggers on the application's tables (when they exist).
SELECT @extschema@.legacy_backup_on_create();

-- legacy_backup 0.5.0 -> 0.6.0 (ALTER EXTENSION legacy_backup UPDATE TO '0.6.0').
-- Tested by tests/integration/t_upgrade.sh: an updated database must have exactly the objects of
-- a fresh 0.6.0 install (tests/upgrade/catalog.sql) and keep its data. Upgrade scripts cannot
-- include files: the bodies below repeat sql/finalize.sql (scripts/sync_upgrade_script.py
-- refreshes them).
--
-- 0.6.0 makes the backups evidence (docs/security.md, docs/operations.md "Sealed backups"):
-- objects sealed with a key the database does not hold, snapshots chained, uploads write-once,
-- every object re-read by the worker's scrub, fetching is verifying. Objects uploaded before stay
-- valid: plain, with the sha256 the database recorded for them.

-- 1. What the database records of each object: its chain link, its seal, its size in storage,
-- and its last check (now also 'repaired', by the scrub).
ALTER TABLE legacy_backup.snapshots DROP CONSTRAINT snapshots_verify_result_check;
ALTER TABLE legacy_backup.snapshots
    ADD COLUMN previous_sha256 text CHECK (previous_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN sealed_key_id text,
    ADD COLUMN object_bytes bigint CHECK (object_bytes >= 0),
    ADD CONSTRAINT snapshots_verify_result_check
        CHECK (verify_result IN ('verified', 'mismatch', 'missing', 'repaired'));

-- Snapshots taken with the 0.6.0 library before this update carry their link in the document only.
UPDATE legacy_backup.snapshots
   SET previous_sha256 = pg_catalog.convert_from(body, 'UTF8')::json ->> 'previousSha256'
 WHERE format_version >= 3 AND body IS NOT NULL;

-- 2. The view shows the seal, the chain link and the last check.
CREATE OR REPLACE VIEW @extschema@.legacy_snapshots AS
SELECT s.session_id,
       s.snapshot_at,
       s.taken_by,
       pg_catalog.pg_size_pretty(s.bytes) AS size,
       s.bytes,
       (s.stats ->> 'total')::int AS documents,
       (s.stats ->> 'categorized')::int AS categorized,
       s.upload_state,
       s.uploaded_at,
       s.body IS NOT NULL AS body_in_database,
       s.sha256,
       s.snapshot_key,
       s.id AS snapshot_id,
       s.sealed_key_id IS NOT NULL AS sealed,
       s.sealed_key_id AS key_id,
       s.previous_sha256,
       s.verified_at AS checked_at,
       s.verify_result AS check_state
FROM legacy_backup.snapshots s
ORDER BY s.session_id, s.snapshot_at DESC;
COMMENT ON VIEW @extschema@.legacy_snapshots IS
    'Snapshots per session, newest first: when, by whom, size, sha256, upload state, seal (key id), chain link and last check of the object';

-- 3. Fetching is verifying: the library opens, SQL raises LB010.
CREATE FUNCTION legacy_backup."fetch_backup"("key" TEXT, "override_actor" TEXT)
RETURNS TABLE ("body" TEXT, "refusal" TEXT, "detail" TEXT, "state" TEXT)
VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_fetch_backup_wrapper';

DROP FUNCTION @extschema@.legacy_snapshot_fetch(text);
CREATE FUNCTION @extschema@.legacy_snapshot_fetch(key text) RETURNS json
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO STRICT r FROM legacy_backup.fetch_backup(key, NULL);
    IF r.refusal IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'LB010', MESSAGE = r.refusal, DETAIL = r.detail,
            HINT = 'Only sealed objects that open with this server''s keys, or plain ones whose sha256 this database recorded, are trusted. A partner may admit a plain file this database has no record of with legacy_snapshot_fetch_unverified(key, actor_id) (audited).';
    END IF;
    RETURN r.body::json;
END $$;

CREATE FUNCTION @extschema@.legacy_snapshot_fetch_unverified(key text, actor_id text) RETURNS json
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    IF actor_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'actor_id must not be NULL',
            HINT = 'Pass the users.id of the partner admitting the file; it is written to the audit log.';
    END IF;
    SELECT * INTO STRICT r FROM legacy_backup.fetch_backup(key, actor_id);
    IF r.refusal IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'LB010', MESSAGE = r.refusal, DETAIL = r.detail,
            HINT = 'The override admits only plain files this database has no record of; never a sealed object that fails, nor one that contradicts the record.';
    END IF;
    RETURN r.body::json;
END $$;

-- A restore of a pruned snapshot fetches it by the same rule, and raises LB010 the same way.
CREATE FUNCTION legacy_backup."restore_backup"("snapshot_id" TEXT, "actor_id" TEXT, "dry_run" bool)
RETURNS jsonb
VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_restore_backup_wrapper';
DROP FUNCTION @extschema@.legacy_restore_snapshot(text, text, boolean);
CREATE FUNCTION @extschema@.legacy_restore_snapshot(snapshot_id text, actor_id text, dry_run boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    report jsonb;
BEGIN
    report := legacy_backup.restore_backup(snapshot_id, actor_id, dry_run);
    IF report ? 'refusal' THEN
        RAISE EXCEPTION USING ERRCODE = 'LB010', MESSAGE = report->>'refusal', DETAIL = report->>'detail',
            HINT = 'The body of this snapshot was pruned from the database and its object fails verification: see legacy_backup_verify_all(); restore from another snapshot.';
    END IF;
    RETURN report;
END $$;
COMMENT ON FUNCTION legacy_backup.restore_backup(text, text, boolean) IS
    'Internal: the restore behind legacy_restore_snapshot, which raises its refusal as LB010';
COMMENT ON FUNCTION @extschema@.legacy_restore_snapshot(text, text, boolean) IS
    'Restores a session''s categorization from a stored snapshot (its body in the database, or its object fetched and verified when pruned; LB010 if that fails); dry run by default; partners only';
REVOKE EXECUTE ON FUNCTION
    @extschema@.legacy_restore_snapshot(text, text, boolean),
    legacy_backup.restore_backup(text, text, boolean)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.legacy_restore_snapshot(text, text, boolean) TO legacy_backup_admin;

-- 4. One call verifies everything; a second walks storage alone.
CREATE FUNCTION @extschema@."legacy_backup_verify_all"()
RETURNS TABLE ("snapshot_key" TEXT, "session_id" TEXT, "state" TEXT, "detail" TEXT)
VOLATILE STRICT SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_verify_all_wrapper';
CREATE FUNCTION @extschema@."legacy_backup_verify_storage"()
RETURNS TABLE ("snapshot_key" TEXT, "session_id" TEXT, "state" TEXT, "detail" TEXT)
VOLATILE STRICT SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_verify_storage_wrapper';

COMMENT ON FUNCTION @extschema@.legacy_snapshot_fetch(text) IS
    'A snapshot document fetched from object storage by key, only if it verifies (sealed and opening, or plain with the recorded sha256); LB010 otherwise';
COMMENT ON FUNCTION @extschema@.legacy_snapshot_fetch_unverified(text, text) IS
    'Partner override: also admits a plain file this database has no record of (the application''s own older snapshots); writes SNAPSHOT_FETCHED_UNVERIFIED';
COMMENT ON FUNCTION legacy_backup.fetch_backup(text, text) IS
    'Internal: fetches and opens a backup object; the legacy_snapshot_fetch functions raise its refusals';
COMMENT ON FUNCTION @extschema@.legacy_backup_verify_all() IS
    'Every snapshot the database knows checked in object storage (ok, unsealed, missing, mismatch, broken_chain, repaired, pending) and every unknown object under backups/ (unexpected)';
COMMENT ON FUNCTION @extschema@.legacy_backup_verify_storage() IS
    'The same walk from object storage alone, for a lost database: seals opened, chains followed, gaps found';

REVOKE EXECUTE ON FUNCTION
    @extschema@.legacy_snapshot_fetch(text),
    @extschema@.legacy_snapshot_fetch_unverified(text, text),
    @extschema@.legacy_backup_verify_all(),
    @extschema@.legacy_backup_verify_storage(),
    legacy_backup.fetch_backup(text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    @extschema@.legacy_snapshot_fetch(text),
    @extschema@.legacy_snapshot_fetch_unverified(text, text),
    @extschema@.legacy_backup_verify_all(),
    @extschema@.legacy_backup_verify_storage()
TO legacy_backup_admin;

-- 5. The audit trail leaves the database too.
-- The audit trail in object storage (src/worker/trail.rs): the worker ships new rows of
-- category_assignment_logs, per session, in sealed segments chained by sha256, written once to
-- backups/{session}/trail-{sequence}.json; scrubbed and verified like snapshots. A fresh database
-- rebuilds a session's trail from them (legacy_trail_rebuild).
CREATE TABLE legacy_backup.trail_segments (
    id              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    session_id      text NOT NULL,
    -- The database that shipped it (legacy_backup.instance): each writes a chain of its own.
    instance        text NOT NULL CHECK (instance ~ '^[0-9a-f]{8}$'),
    sequence        integer NOT NULL CHECK (sequence >= 1),
    object_key      text NOT NULL UNIQUE,
    first_log_id    bigint NOT NULL,
    last_log_id     bigint NOT NULL,
    row_count       integer NOT NULL CHECK (row_count >= 0),
    body            bytea,
    sha256          text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    previous_sha256 text CHECK (previous_sha256 ~ '^[0-9a-f]{64}$'),
    bytes           bigint NOT NULL CHECK (bytes >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    upload_state    text NOT NULL DEFAULT 'pending' CHECK (upload_state IN ('pending', 'uploaded', 'failed')),
    uploaded_at     timestamptz,
    etag            text,
    object_bytes    bigint CHECK (object_bytes >= 0),
    sealed_key_id   text,
    verified_at     timestamptz,
    verify_result   text CHECK (verify_result IN ('verified', 'mismatch', 'missing', 'repaired')),
    -- Read back from object storage by legacy_trail_rebuild, not shipped from this database.
    rebuilt         boolean NOT NULL DEFAULT false,
    UNIQUE (session_id, instance, sequence),
    CHECK (object_key = 'backups/' || session_id || '/trail-' || instance || '-' || pg_catalog.lpad(sequence::text, 10, '0') || '.json')
);
CREATE INDEX trail_segments_pending_idx ON legacy_backup.trail_segments (created_at) WHERE upload_state = 'pending';
COMMENT ON TABLE legacy_backup.trail_segments IS
    'Segments of the audit trail shipped to object storage: rows, sha256, chain link, upload state, last check';
SELECT pg_catalog.pg_extension_config_dump('legacy_backup.trail_segments', '');

-- Which log rows are shipped: every id up to floor, and those above it listed in trail_shipped.
-- The floor moves to pending_floor once every transaction that could still commit a row at or
-- below it has ended: all those began before pending_xid, the shipping transaction's own xid,
-- taken after it read the rows.
CREATE TABLE legacy_backup.trail_cursor (
    only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    floor         bigint NOT NULL DEFAULT 0,
    pending_floor bigint,
    pending_xid   xid8
);
-- Its one row is made by the first shipping (worker/trail.rs), not here: a restored dump brings
-- its own.
COMMENT ON TABLE legacy_backup.trail_cursor IS
    'The audit trail''s shipping position: every log id at or below floor is in a segment (or was never committed)';
SELECT pg_catalog.pg_extension_config_dump('legacy_backup.trail_cursor', '');
-- This database's name for its own trail chains: made at CREATE EXTENSION and, unlike the other
-- tables, not dumped, so a database restored from a dump starts a chain of its own instead of
-- reaching for keys its original wrote after the dump.
CREATE TABLE legacy_backup.instance (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    id       text NOT NULL DEFAULT pg_catalog.substr(pg_catalog.md5(gen_random_uuid()::text), 1, 8)
);
INSERT INTO legacy_backup.instance DEFAULT VALUES;
COMMENT ON TABLE legacy_backup.instance IS
    'This database''s instance id, part of its trail segments'' keys (not dumped: a restored database gets its own)';
CREATE TABLE legacy_backup.trail_shipped (
    log_id bigint PRIMARY KEY
);
COMMENT ON TABLE legacy_backup.trail_shipped IS
    'Log ids above the cursor''s floor already in a segment';
SELECT pg_catalog.pg_extension_config_dump('legacy_backup.trail_shipped', '');

GRANT SELECT ON @extschema@.category_assignment_logs TO legacy_backup_worker;
GRANT SELECT, INSERT, UPDATE ON legacy_backup.trail_segments, legacy_backup.trail_cursor TO legacy_backup_worker;
GRANT SELECT, INSERT, DELETE ON legacy_backup.trail_shipped TO legacy_backup_worker;
GRANT SELECT ON legacy_backup.instance TO legacy_backup_worker;

-- 6. A session's trail rebuilt from object storage.
CREATE FUNCTION legacy_backup."trail_rebuild"("session_id" TEXT, "actor_id" TEXT, "dry_run" bool)
RETURNS jsonb
VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_trail_rebuild_wrapper';

CREATE FUNCTION @extschema@.legacy_trail_rebuild(session_id text, actor_id text, dry_run boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    report jsonb;
BEGIN
    report := legacy_backup.trail_rebuild(session_id, actor_id, dry_run);
    IF report ? 'refusal' THEN
        RAISE EXCEPTION USING ERRCODE = 'LB010', MESSAGE = report->>'refusal', DETAIL = report->>'detail',
            HINT = 'See legacy_backup_verify_storage() for the state of every object of the session.';
    END IF;
    RETURN report;
END $$;

COMMENT ON FUNCTION @extschema@.legacy_trail_rebuild(text, text, boolean) IS
    'Rebuilds a session''s audit trail from its sealed, chained segments in object storage (dry run by default); partners only; LB010 on a missing, forged or reordered segment';
COMMENT ON FUNCTION legacy_backup.trail_rebuild(text, text, boolean) IS
    'Internal: the rebuild behind legacy_trail_rebuild';
REVOKE EXECUTE ON FUNCTION @extschema@.legacy_trail_rebuild(text, text, boolean),
                           legacy_backup.trail_rebuild(text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.legacy_trail_rebuild(text, text, boolean) TO legacy_backup_admin;

-- 7. Deleted sessions: the final snapshot is taken before the row goes; the schedule outlives
-- the row, and the worker deletes the session's files when due, exported or not.
ALTER TABLE legacy_backup.cleanup_schedule
    ALTER COLUMN exported_at DROP NOT NULL,
    ADD COLUMN deleted_at timestamptz,
    ADD COLUMN cleaned_up_at timestamptz CHECK (cleaned_up_at IS NULL OR deleted_at IS NOT NULL);
COMMENT ON TABLE legacy_backup.cleanup_schedule IS
    'Scheduled cleanup per exported or deleted session, as the extension set it (export, delete, postponement); the worker reads only this';
COMMENT ON COLUMN legacy_backup.cleanup_schedule.grace IS
    'legacy_backup.cleanup_delay at the export (or at the delete)';
COMMENT ON COLUMN legacy_backup.cleanup_schedule.deleted_at IS
    'When the session row was deleted (NULL: it exists); its files are then deleted when due, exported or not';
COMMENT ON COLUMN legacy_backup.cleanup_schedule.cleaned_up_at IS
    'When the worker deleted a deleted session''s files';

CREATE FUNCTION legacy_backup."final_snapshot"("session_id" TEXT, "actor_id" TEXT)
RETURNS jsonb
VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_final_snapshot_wrapper';
REVOKE EXECUTE ON FUNCTION legacy_backup.final_snapshot(text, text) FROM PUBLIC;
COMMENT ON FUNCTION legacy_backup.final_snapshot(text, text) IS
    'Internal: the final snapshot of a session being deleted (NULL when it holds no work: no document, no category, no logged change)';

CREATE FUNCTION @extschema@.legacy_backup_session_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM legacy_backup.final_snapshot(OLD.id,
        coalesce(nullif(current_setting('legacy_backup.actor', true), ''), 'pg:' || session_user));
    RETURN OLD;
END $$;
COMMENT ON FUNCTION @extschema@.legacy_backup_session_delete() IS
    'Trigger (BEFORE DELETE): takes the final snapshot of a session that holds any work, inside the deleting transaction';
REVOKE EXECUTE ON FUNCTION @extschema@.legacy_backup_session_delete() FROM PUBLIC;

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

-- The new BEFORE DELETE trigger on legacy_import_sessions, when the table exists (as at CREATE
-- EXTENSION).
SELECT @extschema@.legacy_backup_on_create();

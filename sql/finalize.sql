-- Runs after every generated object exists.

-- Snapshots per session, for psql: when, by whom, size, hash, upload state. No bodies.
CREATE VIEW @extschema@.legacy_snapshots AS
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

-- The worker's jobs, for psql. No snapshot bodies, no settings, no secrets.
CREATE VIEW @extschema@.legacy_backup_jobs AS
SELECT j.id, j.kind, j.session_id, j.state, j.attempts, j.next_attempt_at, j.last_error,
       j.progress, j.snapshot_id, j.requested_by, j.manual, j.created_at, j.started_at, j.finished_at
FROM legacy_backup.jobs j
ORDER BY j.id DESC;
COMMENT ON VIEW @extschema@.legacy_backup_jobs IS
    'Background jobs (upload, cleanup, prune), newest first: state, attempts, next attempt, last error, progress';

COMMENT ON FUNCTION @extschema@.legacy_snapshot(text) IS
    'Full categorization snapshot of one import session as json (deterministic, no side effects)';
COMMENT ON FUNCTION @extschema@.legacy_snapshot_take(text, text) IS
    'Builds and stores a snapshot, writes a CATEGORIZATION_SNAPSHOT audit row, sets last_snapshot_at; returns id, key, time, sha256, bytes, stats';
COMMENT ON FUNCTION @extschema@.legacy_backup_attach() IS
    'Attaches to the application tables (adds missing session columns); idempotent; reports each step';
COMMENT ON FUNCTION @extschema@.legacy_backup_health() IS
    'Reports whether protection is active: tables, added columns, pending uploads, preload';
COMMENT ON FUNCTION @extschema@.legacy_backup_on_create() IS
    'Internal: attaches at CREATE EXTENSION when the application tables exist';

COMMENT ON FUNCTION @extschema@.legacy_undo_last_categorization(text, text) IS
    'Reverts the actor''s most recent change (or of one document); a bulk change is undone as a whole transaction; within legacy_backup.undo_window';

COMMENT ON FUNCTION @extschema@.legacy_export_begin(text, text) IS
    'Begins an export: takes a snapshot if the newest is missing, old or outdated, pins it, returns the verdict; the final status change is then not refused for the snapshot''s age';
COMMENT ON FUNCTION @extschema@.legacy_export_readiness(text) IS
    'Whether a session may be exported now (ready, code, message, snapshot age, changes since, upload and cleanup state); the same verdict as the export trigger';
COMMENT ON FUNCTION @extschema@.legacy_backup_export_verdict(text) IS
    'Internal: the export check trigger''s verdict (not executable by PUBLIC)';
COMMENT ON FUNCTION @extschema@.legacy_backup_audit(text, text, text, jsonb) IS
    'Internal: writes a legacy_import_audit_logs row as that table''s owner, with the database role (not executable by PUBLIC)';
COMMENT ON FUNCTION @extschema@.legacy_backup_trigger_problems() IS
    'The extension''s triggers on application tables that exist but are disabled, replication-only, replaced or renamed (empty when all is well)';
COMMENT ON FUNCTION @extschema@.legacy_backup_check_id(text, text) IS
    'Internal: the id rule (src/ids.rs) for the extension''s SQL-language functions';
COMMENT ON FUNCTION @extschema@.legacy_postpone_cleanup(text, text, timestamptz) IS
    'Moves a session''s scheduled cleanup later (active partners only); audited';

COMMENT ON FUNCTION @extschema@.legacy_snapshot_verify(text) IS
    'Downloads the snapshot from object storage and compares its sha256 with the stored one; records and returns the result';
-- Fetching is verifying (src/backup.rs): a refused object raises LB010 here, in SQL, because a
-- function written in Rust can raise only PostgreSQL's own SQLSTATEs.
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

COMMENT ON FUNCTION @extschema@.legacy_snapshot_fetch(text) IS
    'A snapshot document fetched from object storage by key, only if it verifies (sealed and opening, or plain with the recorded sha256); LB010 otherwise';
COMMENT ON FUNCTION @extschema@.legacy_snapshot_fetch_unverified(text, text) IS
    'Partner override: also admits a plain file this database has no record of (the application''s own older snapshots); writes SNAPSHOT_FETCHED_UNVERIFIED';
COMMENT ON FUNCTION @extschema@.legacy_trail_rebuild(text, text, boolean) IS
    'Rebuilds a session''s audit trail from its sealed, chained segments in object storage (dry run by default); partners only; LB010 on a missing, forged or reordered segment';
COMMENT ON FUNCTION legacy_backup.trail_rebuild(text, text, boolean) IS
    'Internal: the rebuild behind legacy_trail_rebuild';
COMMENT ON FUNCTION legacy_backup.restore_backup(text, text, boolean) IS
    'Internal: the restore behind legacy_restore_snapshot, which raises its refusal as LB010';
COMMENT ON FUNCTION legacy_backup.fetch_backup(text, text) IS
    'Internal: fetches and opens a backup object; the legacy_snapshot_fetch functions raise its refusals';
COMMENT ON FUNCTION @extschema@.legacy_backup_verify_all() IS
    'Every snapshot the database knows checked in object storage (ok, unsealed, missing, mismatch, broken_chain, repaired, pending) and every unknown object under backups/ (unexpected)';
COMMENT ON FUNCTION @extschema@.legacy_backup_verify_storage() IS
    'The same walk from object storage alone, for a lost database: seals opened, chains followed, gaps found';
COMMENT ON FUNCTION @extschema@.legacy_restore_snapshot(text, text, boolean) IS
    'Restores a session''s categorization from a stored snapshot (its body in the database, or its object fetched and verified when pruned; LB010 if that fails); dry run by default; partners only';
COMMENT ON FUNCTION @extschema@.legacy_snapshot_import(json, text, boolean) IS
    'Restores a session''s categorization from a snapshot document; dry run by default; partners only';

COMMENT ON FUNCTION @extschema@.legacy_cleanup_session(text, text, text) IS
    'Partner-only manual cleanup of a session''s files: preview without confirm, cleanup with confirm = session id (run by the worker, audited)';

-- Privileges: nothing for PUBLIC but what the triggers need; the three roles get the rest.
REVOKE ALL ON FUNCTION @extschema@.legacy_backup_on_create() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    @extschema@.legacy_backup_check_id(text, text),
    @extschema@.legacy_backup_check_session(text),
    @extschema@.legacy_snapshot(text),
    @extschema@.legacy_document_history(text),
    @extschema@.legacy_categorization_at(text, timestamptz),
    @extschema@.legacy_session_activity(text, timestamptz),
    @extschema@.legacy_export_readiness(text),
    @extschema@.legacy_backup_health(),
    @extschema@.legacy_snapshot_take(text, text),
    @extschema@.legacy_export_begin(text, text),
    @extschema@.legacy_undo_last_categorization(text, text),
    @extschema@.legacy_postpone_cleanup(text, text, timestamptz),
    @extschema@.legacy_backup_attach(),
    @extschema@.legacy_cleanup_session(text, text, text),
    @extschema@.legacy_restore_snapshot(text, text, boolean),
    @extschema@.legacy_snapshot_import(json, text, boolean),
    @extschema@.legacy_snapshot_verify(text),
    @extschema@.legacy_snapshot_fetch(text),
    @extschema@.legacy_snapshot_fetch_unverified(text, text),
    @extschema@.legacy_backup_verify_all(),
    @extschema@.legacy_backup_verify_storage(),
    @extschema@.legacy_trail_rebuild(text, text, boolean),
    legacy_backup.fetch_backup(text, text),
    legacy_backup.trail_rebuild(text, text, boolean),
    legacy_backup.restore_backup(text, text, boolean)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    @extschema@.legacy_backup_check_id(text, text),
    @extschema@.legacy_backup_check_session(text),
    @extschema@.legacy_snapshot(text),
    @extschema@.legacy_document_history(text),
    @extschema@.legacy_categorization_at(text, timestamptz),
    @extschema@.legacy_session_activity(text, timestamptz),
    @extschema@.legacy_export_readiness(text),
    @extschema@.legacy_backup_health()
TO legacy_backup_reader;
GRANT SELECT ON @extschema@.legacy_snapshots, @extschema@.legacy_backup_jobs,
                @extschema@.category_assignment_logs, @extschema@.category_change_logs TO legacy_backup_reader;
GRANT EXECUTE ON FUNCTION
    @extschema@.legacy_snapshot_take(text, text),
    @extschema@.legacy_export_begin(text, text),
    @extschema@.legacy_undo_last_categorization(text, text),
    @extschema@.legacy_postpone_cleanup(text, text, timestamptz)
TO legacy_backup_operator;
GRANT EXECUTE ON FUNCTION
    @extschema@.legacy_backup_attach(),
    @extschema@.legacy_cleanup_session(text, text, text),
    @extschema@.legacy_restore_snapshot(text, text, boolean),
    @extschema@.legacy_snapshot_import(json, text, boolean),
    @extschema@.legacy_snapshot_verify(text),
    @extschema@.legacy_snapshot_fetch(text),
    @extschema@.legacy_snapshot_fetch_unverified(text, text),
    @extschema@.legacy_backup_verify_all(),
    @extschema@.legacy_backup_verify_storage(),
    @extschema@.legacy_trail_rebuild(text, text, boolean)
TO legacy_backup_admin;
-- Trigger functions fire whatever their EXECUTE privilege; revoking it only stops anyone from
-- attaching them elsewhere.
REVOKE EXECUTE ON FUNCTION @extschema@.legacy_backup_log_change(), @extschema@.legacy_backup_log_flush(),
                           @extschema@.legacy_backup_id_guard(), @extschema@.legacy_backup_truncate_guard(),
                           @extschema@.legacy_backup_export_gate(), @extschema@.legacy_backup_export_check(),
                           @extschema@.legacy_backup_log_category(),
                           @extschema@.legacy_backup_session_delete() FROM PUBLIC;
-- Called only by the export check trigger, which runs as the extension's owner.
REVOKE EXECUTE ON FUNCTION @extschema@.legacy_backup_export_verdict(text),
                           @extschema@.legacy_backup_audit(text, text, text, jsonb) FROM PUBLIC;
-- Called only by legacy_backup_session_delete, which runs as the extension's owner.
REVOKE EXECUTE ON FUNCTION legacy_backup.final_snapshot(text, text) FROM PUBLIC;
COMMENT ON FUNCTION legacy_backup.final_snapshot(text, text) IS
    'Internal: the final snapshot of a session being deleted (NULL when it holds no work: no document, no category, no logged change)';

-- The UPDATE trail's functions are C (src/audit_trail.rs) and the only ones without a pinned
-- search_path: the row function resolves no names, and the flush runs two prepared INSERTs
-- that name every object with its schema. They run for every categorizing statement and every
-- changed row of a bulk merge, where a SET clause would cost more than the functions.
COMMENT ON FUNCTION @extschema@.legacy_backup_log_change() IS
    'Trigger (row: UPDATE and INSERT with a WHEN, DELETE): buffers the change for the audit trail';
COMMENT ON FUNCTION @extschema@.legacy_backup_log_flush() IS
    'Trigger (statement): writes the audit-trail rows buffered by legacy_backup_log_change, in one INSERT';

COMMENT ON FUNCTION @extschema@.legacy_backup_protected_triggers() IS
    'Names of the extension''s triggers on application tables, for the event triggers that guard them';

SELECT @extschema@.legacy_backup_on_create();

-- The background worker's role (src/worker): its queue, the snapshots it uploads and prunes, the
-- schedule it stamps and reads. It writes application tables only as their owner
-- (privilege::as_owner_of); legacy_backup_attach() grants it SELECT on legacy_import_sessions.
GRANT USAGE ON SCHEMA legacy_backup TO legacy_backup_worker;
GRANT SELECT, INSERT, UPDATE ON legacy_backup.jobs TO legacy_backup_worker;
GRANT SELECT, UPDATE ON legacy_backup.snapshots, legacy_backup.cleanup_schedule TO legacy_backup_worker;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA legacy_backup TO legacy_backup_worker;
-- The audit trail's shipping (src/worker/trail.rs): reads the log, writes its own tables.
GRANT SELECT ON @extschema@.category_assignment_logs TO legacy_backup_worker;
GRANT SELECT, INSERT, UPDATE ON legacy_backup.trail_segments, legacy_backup.trail_cursor TO legacy_backup_worker;
GRANT SELECT, INSERT, DELETE ON legacy_backup.trail_shipped TO legacy_backup_worker;
GRANT SELECT ON legacy_backup.instance TO legacy_backup_worker;

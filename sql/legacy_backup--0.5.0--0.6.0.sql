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

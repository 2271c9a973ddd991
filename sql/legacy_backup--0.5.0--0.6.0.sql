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

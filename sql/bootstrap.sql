-- legacy_backup: the extension's own tables, in schema legacy_backup.
-- Application tables are referenced only through @extschema@ (the schema CREATE EXTENSION was
-- given), and none of them is required here: CREATE EXTENSION must work before the tables exist,
-- as in every pg_restore.

CREATE SCHEMA legacy_backup;
COMMENT ON SCHEMA legacy_backup IS 'Internal tables of the legacy_backup extension';

-- One row per snapshot taken. Metadata is kept forever; the body may be pruned once the
-- snapshot is safely in object storage (see the worker).
CREATE TABLE legacy_backup.snapshots (
    id             text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    session_id     text NOT NULL,
    snapshot_key   text NOT NULL UNIQUE,
    snapshot_at    timestamptz NOT NULL,
    taken_by       text NOT NULL,
    format_version integer NOT NULL,
    body           bytea,
    sha256         text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes          bigint NOT NULL CHECK (bytes >= 0),
    stats          jsonb NOT NULL,
    -- The MVCC snapshot the body was read under: a change is in the snapshot exactly when its
    -- transaction is visible in it (pg_visible_in_snapshot).
    visibility     pg_snapshot NOT NULL,
    upload_state   text NOT NULL DEFAULT 'pending'
                   CHECK (upload_state IN ('pending', 'uploaded', 'failed')),
    uploaded_at    timestamptz,
    etag           text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (snapshot_key LIKE 'backups/' || session_id || '/categorization-%.json')
);
CREATE INDEX snapshots_session_idx ON legacy_backup.snapshots (session_id, snapshot_at DESC);
CREATE INDEX snapshots_pending_idx ON legacy_backup.snapshots (created_at) WHERE upload_state = 'pending';
COMMENT ON TABLE legacy_backup.snapshots IS
    'Categorization snapshots: exact JSON bytes, sha256, object key and upload state';

-- lz4 compresses a 4 MB snapshot body several times faster than the default pglz; servers built
-- without lz4 keep pglz.
DO $$
BEGIN
    ALTER TABLE legacy_backup.snapshots ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END $$;

SELECT pg_catalog.pg_extension_config_dump('legacy_backup.snapshots', '');

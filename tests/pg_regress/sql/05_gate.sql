-- The export gate: readiness and trigger agree in every state; a permitted export schedules the
-- cleanup; bypass by permitted and refused roles; re-opening; postponing; bad input.
\set VERBOSITY default
\set ECHO none
\set sid gate-a
\set docs 20
\set cats 3
\set months 2
\i tests/fixtures/seed.sql
\set sid gate-b
\i tests/fixtures/seed.sql
\set sid gate-c
\i tests/fixtures/seed.sql
\set ECHO all
INSERT INTO users (id, email, first_name, last_name, role, status, azure_ad_id)
VALUES ('u-partner-inactive', 'old@firm.test', 'Olga', 'Old', 'Partner', 'Inactive', 'aad-old');

-- Tries the export in a subtransaction that is always undone, and reports what the trigger said.
CREATE FUNCTION regress.try_export(sid text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE state text;
BEGIN
    BEGIN
        UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = sid;
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'undo the trial';
    EXCEPTION WHEN raise_exception THEN
        RETURN 'exported';
    WHEN others THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
        RETURN state;
    END;
END $$;
-- Readiness code next to what the trigger does, for one session.
CREATE FUNCTION regress.gate_state(sid text) RETURNS TABLE (readiness text, ready boolean, trigger_outcome text, agree boolean)
LANGUAGE sql AS $$
    SELECT r->>'code', (r->>'ready')::boolean, t,
           CASE r->>'code' WHEN 'READY' THEN t = 'exported' WHEN 'SNAPSHOT_REQUIRED' THEN t = 'LB001'
                           WHEN 'SNAPSHOT_STALE' THEN t = 'LB002' WHEN 'SNAPSHOT_OUTDATED' THEN t = 'LB003'
                          WHEN 'AUDIT_TRAIL_INACTIVE' THEN t = 'LB007' END
    FROM (SELECT legacy_export_readiness(sid) AS r, regress.try_export(sid) AS t) x
$$;

-- SNAPSHOT_REQUIRED: no snapshot yet.
SELECT * FROM regress.gate_state('gate-a');
SELECT * FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'gate-a'$$);

-- READY after a snapshot.
SELECT legacy_snapshot_take('gate-a', 'u-partner') ? 'snapshotId' AS taken;
SELECT * FROM regress.gate_state('gate-a');
SELECT r->>'message' LIKE 'session "gate-a" may be exported: its newest snapshot (% minutes old) holds the current categorization' AS message_ok,
       r->'changesSinceSnapshot' AS changes, r->'snapshotUploaded' AS uploaded,
       r->'auditLogActive' AS audit_log_active, r->'cleanupScheduledAt' AS cleanup_scheduled_at
FROM (SELECT legacy_export_readiness('gate-a') AS r) x;

-- SNAPSHOT_OUTDATED: categorization changed after the snapshot (from the audit trail).
SELECT app_categorize('gate-a-doc-000020', 'gate-a-cat-001', 'u-paralegal');
SELECT * FROM regress.gate_state('gate-a');
SELECT r->'changesSinceSnapshot' AS changes FROM (SELECT legacy_export_readiness('gate-a') AS r) x;
SELECT code, regexp_replace(message, '\([0-9.]+ minutes old\)', '(N minutes old)') AS message, hint
FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'gate-a'$$);

-- A change in the exporting transaction after its own snapshot also counts.
BEGIN;
SELECT legacy_snapshot_take('gate-a') ? 'snapshotId' AS taken;
SELECT * FROM regress.gate_state('gate-a');
SELECT app_categorize('gate-a-doc-000019', 'gate-a-cat-001', 'u-paralegal');
SELECT * FROM regress.gate_state('gate-a');
ROLLBACK;

-- SNAPSHOT_STALE: older than legacy_backup.max_snapshot_age.
SELECT legacy_snapshot_take('gate-a') ? 'snapshotId' AS taken;
SET legacy_backup.max_snapshot_age = '1s';
SELECT pg_sleep(1.1);
SELECT * FROM regress.gate_state('gate-a');
RESET legacy_backup.max_snapshot_age;
SELECT * FROM regress.gate_state('gate-a');

-- The audit trigger cannot be switched off unconfirmed (LB006); a superuser who confirms it gets
-- exports refused until it is back: without the trail, "no change since" cannot be known.
SELECT code, message FROM regress.error_of($$ALTER TABLE extracted_documents DISABLE TRIGGER legacy_backup_log_update$$);
SET legacy_backup.allow_drop = on;
ALTER TABLE extracted_documents DISABLE TRIGGER legacy_backup_log_update;
RESET legacy_backup.allow_drop;
SELECT app_categorize('gate-a-doc-000018', 'gate-a-cat-002', 'u-paralegal');
SELECT r->>'code' AS code, r->'auditLogActive' AS audit_log_active, r->'changesSinceSnapshot' AS changes
FROM (SELECT legacy_export_readiness('gate-a') AS r) x;
SELECT * FROM regress.gate_state('gate-a');
SELECT outcome FROM legacy_backup_attach() WHERE object LIKE '%legacy_backup_log_update';

-- A permitted export: exported_at, cleanup in 7 days, an audit row naming the snapshot.
SELECT legacy_snapshot_take('gate-a') ->> 'snapshotKey' AS key \gset
BEGIN;
SET LOCAL legacy_backup.actor = 'u-partner';
UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'gate-a';
-- (Both from the exporting statement's own time, statement_timestamp(), not the transaction's.)
SELECT exported_at BETWEEN now() AND clock_timestamp() AS exported_at_set,
       cleanup_scheduled_at = exported_at + interval '7 days' AS cleanup_in_7_days
FROM legacy_import_sessions WHERE id = 'gate-a';
COMMIT;
SELECT action, user_id, details->>'snapshotKey' = :'key' AS names_snapshot, details->'verdict' AS verdict, details->'checkSkipped' AS skipped
FROM legacy_import_audit_logs WHERE session_id = 'gate-a' AND action LIKE 'EXPORT%';
SELECT r->>'code' AS code, r->'ready' AS ready, r->'cleanupScheduledAt' IS NOT NULL AS cleanup_scheduled
FROM (SELECT legacy_export_readiness('gate-a') AS r) x;

-- Setting Exported again is not a new export: nothing rescheduled, no audit row.
SELECT cleanup_scheduled_at AS scheduled FROM legacy_import_sessions WHERE id = 'gate-a' \gset
UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'gate-a';
SELECT cleanup_scheduled_at = :'scheduled' AS unchanged,
       (SELECT count(*) FROM legacy_import_audit_logs WHERE session_id = 'gate-a' AND action LIKE 'EXPORT%') AS export_rows
FROM legacy_import_sessions WHERE id = 'gate-a';

-- Postponing: active partners only, later dates only.
SELECT * FROM regress.error_of($$SELECT legacy_postpone_cleanup('gate-a', 'u-paralegal', now() + interval '30 days')$$);
SELECT * FROM regress.error_of($$SELECT legacy_postpone_cleanup('gate-a', 'u-partner-inactive', now() + interval '30 days')$$);
SELECT * FROM regress.error_of($$SELECT legacy_postpone_cleanup('gate-a', 'u-partner', now() + interval '1 day')$$);
SELECT * FROM regress.error_of($$SELECT legacy_postpone_cleanup('gate-a', 'u-partner', 'infinity')$$);
SELECT * FROM regress.error_of($$SELECT legacy_postpone_cleanup('gate-a', 'u-partner', now() + interval '20 years')$$);
SELECT * FROM regress.error_of($$SELECT legacy_postpone_cleanup('gate-a', 'u-partner', NULL)$$);
SELECT * FROM regress.error_of($$SELECT legacy_postpone_cleanup('gate-b', 'u-partner', now() + interval '30 days')$$);
SELECT * FROM regress.error_of($$SELECT legacy_postpone_cleanup('nope', 'u-partner', now() + interval '30 days')$$);
SELECT * FROM regress.error_of($$SELECT legacy_postpone_cleanup('gate-a', 'no-user', now() + interval '30 days')$$);
BEGIN;
SELECT r ? 'cleanupScheduledAt' AS postponed FROM (SELECT legacy_postpone_cleanup('gate-a', 'u-partner', now() + interval '30 days') AS r) x;
SELECT cleanup_scheduled_at = now() + interval '30 days' AS moved_to_30_days FROM legacy_import_sessions WHERE id = 'gate-a';
COMMIT;
SELECT action, user_id FROM legacy_import_audit_logs WHERE session_id = 'gate-a' AND action = 'CLEANUP_POSTPONED';
-- A BusinessOwner counts as a partner, as in the application (legacy_backup.partner_roles).
INSERT INTO users (id, email, first_name, last_name, role, status, azure_ad_id)
VALUES ('u-owner', 'owner@firm.test', 'Bea', 'Owner', 'BusinessOwner', 'Active', 'aad-owner');
SELECT r ? 'cleanupScheduledAt' AS postponed_by_business_owner
FROM (SELECT legacy_postpone_cleanup('gate-a', 'u-owner', now() + interval '31 days') AS r) x;
SHOW legacy_backup.partner_roles;
SHOW legacy_backup.cleanup_prefixes;
-- Both lists are checked when set; a prefix must end with the session's own segment and may
-- never reach backups/.
ALTER SYSTEM SET legacy_backup.cleanup_prefixes = 'documents/{sessionId}';
ALTER SYSTEM SET legacy_backup.cleanup_prefixes = 'backups/{sessionId}/';
ALTER SYSTEM SET legacy_backup.partner_roles = 'Partner; DROP';

-- Files are only cleaned up for an exported session.
SELECT * FROM regress.error_of($$UPDATE legacy_import_sessions SET cleaned_up_at = now(), updated_at = now() WHERE id = 'gate-b'$$);

-- Re-opening an exported session cancels its cleanup, with an audit row.
UPDATE legacy_import_sessions SET status = 'InProgress', updated_at = now() WHERE id = 'gate-a';
SELECT status, cleanup_scheduled_at FROM legacy_import_sessions WHERE id = 'gate-a';
SELECT action, details->'newStatus' AS new_status FROM legacy_import_audit_logs WHERE session_id = 'gate-a' AND action = 'EXPORT_CLEANUP_CANCELLED';

-- A multi-row export checks every session and fails as a whole.
SELECT legacy_snapshot_take('gate-b') ? 'snapshotId' AS taken;
SELECT * FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id IN ('gate-b', 'gate-c')$$);
SELECT id, status FROM legacy_import_sessions WHERE id IN ('gate-b', 'gate-c') ORDER BY id;

-- Inserting a session already Exported passes the gate too.
SELECT * FROM regress.error_of($$INSERT INTO legacy_import_sessions (id, firm_id, pst_file_name, pst_file_size, uploaded_by, status, updated_at) VALUES ('gate-new', 'f', 'x.pst', 1, 'u-partner', 'Exported', now())$$);

-- Bypass: a superuser, with an audit row.
BEGIN;
SET LOCAL legacy_backup.skip_snapshot_check = on;
UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'gate-c';
COMMIT;
SELECT action, details->'code' AS code, details->'role' AS role FROM legacy_import_audit_logs WHERE session_id = 'gate-c' AND action LIKE 'EXPORT%' ORDER BY action;

-- Bypass by a member of legacy_backup_admin works; by another role it is refused. The role that
-- counts is the one that logged in (session_user): the check runs in a SECURITY DEFINER trigger.
CREATE ROLE gate_app;
CREATE ROLE gate_admin IN ROLE legacy_backup_admin;
GRANT ALL ON ALL TABLES IN SCHEMA public TO gate_app, gate_admin;
GRANT USAGE ON SCHEMA regress TO gate_app, gate_admin;
UPDATE legacy_import_sessions SET status = 'InProgress', updated_at = now() WHERE id = 'gate-c';
SET SESSION AUTHORIZATION gate_app;
BEGIN;
SET LOCAL legacy_backup.skip_snapshot_check = on;
SELECT * FROM regress.error_of($$UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'gate-c'$$);
ROLLBACK;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION gate_admin;
BEGIN;
SET LOCAL legacy_backup.skip_snapshot_check = on;
UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'gate-c';
COMMIT;
RESET SESSION AUTHORIZATION;
SELECT details->'role' AS role, count(*) FROM legacy_import_audit_logs WHERE session_id = 'gate-c' AND action = 'EXPORT_SNAPSHOT_CHECK_SKIPPED' GROUP BY 1 ORDER BY 1;
-- The application cannot loosen the gate through its settings.
SET ROLE gate_app;
SET legacy_backup.max_snapshot_age = '30 days';
SET legacy_backup.cleanup_delay = '0';
RESET ROLE;

-- ALREADY_EXPORTED, unknown sessions and bad ids.
SELECT legacy_export_readiness('gate-c')->>'code' AS code;
SELECT * FROM regress.error_of($$SELECT legacy_export_readiness('nope')$$);
SELECT * FROM regress.error_of($$SELECT legacy_export_readiness(NULL)$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_export_readiness('../x')$$);

-- Duration settings are checked.
SELECT * FROM regress.error_of($$SET legacy_backup.max_snapshot_age = '0'$$);
SELECT * FROM regress.error_of($$SET legacy_backup.cleanup_delay = '-7 days'$$);
SELECT * FROM regress.error_of($$SET legacy_backup.cleanup_delay = 'soon'$$);
SET legacy_backup.cleanup_delay = '2 days';
SHOW legacy_backup.cleanup_delay;
RESET legacy_backup.cleanup_delay;

DROP OWNED BY gate_app, gate_admin;
DROP ROLE gate_app;
DROP ROLE gate_admin;

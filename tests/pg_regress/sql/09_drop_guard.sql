-- DROP EXTENSION drops the extension's own tables with it: every snapshot and the whole audit
-- trail. It is refused while they hold data, unless a superuser confirms with
-- SET legacy_backup.allow_drop = on. DROP SCHEMA … CASCADE of its schema likewise. Other
-- extensions and schemas drop as usual.
\set VERBOSITY default
SELECT count(*) > 0 AS has_snapshots, (SELECT count(*) > 0 FROM category_assignment_logs WHERE source <> 'baseline') AS has_changes
FROM legacy_backup.snapshots;
SELECT count(*) AS snapshots_before FROM legacy_backup.snapshots \gset

-- Refused, plain or CASCADE, alone or in a list; the counts are in the message.
SELECT code, regexp_replace(message, '\d+', 'N', 'g') AS message, detail, hint
FROM regress.error_of($$DROP EXTENSION legacy_backup$$);
SELECT code FROM regress.error_of($$DROP EXTENSION legacy_backup CASCADE$$);
CREATE EXTENSION lb_regress_other;
SELECT code FROM regress.error_of($$DROP EXTENSION IF EXISTS lb_regress_other, legacy_backup CASCADE$$);
SELECT extname FROM pg_extension WHERE extname IN ('legacy_backup', 'lb_regress_other') ORDER BY extname;
-- DROP SCHEMA … CASCADE of the extension's schema would take the extension with it.
SELECT code, regexp_replace(message, '\d+', 'N', 'g') AS message, detail
FROM regress.error_of($$DROP SCHEMA public CASCADE$$);
SELECT code FROM regress.error_of($$DROP SCHEMA IF EXISTS regress_none, "public" CASCADE$$);
CREATE SCHEMA regress_scratch;
DROP SCHEMA regress_scratch CASCADE;
SELECT count(*) = :snapshots_before AS snapshots_intact FROM legacy_backup.snapshots;

-- legacy_backup_health() says whether the guard is on.
SELECT check_name, ok, detail FROM legacy_backup_health() WHERE check_name = 'event trigger legacy_backup_drop_guard';
ALTER EVENT TRIGGER legacy_backup_drop_guard DISABLE;
SELECT check_name, ok, detail FROM legacy_backup_health() WHERE check_name = 'event trigger legacy_backup_drop_guard';
ALTER EVENT TRIGGER legacy_backup_drop_guard ENABLE;

-- The guard's function is an event trigger only.
SELECT code, message FROM regress.error_of($$SELECT legacy_backup.drop_guard()$$);

-- Other extensions are not affected.
DROP EXTENSION lb_regress_other;
DROP EXTENSION IF EXISTS no_such_extension;

-- Only a superuser can confirm.
CREATE ROLE regress_dropper;
SET ROLE regress_dropper;
SET legacy_backup.allow_drop = on;
RESET ROLE;
DROP ROLE regress_dropper;

-- Confirmed: dropped, and the application's tables and data are untouched.
SELECT count(*) AS documents_before FROM extracted_documents \gset
-- (The cascade NOTICE lists the triggers in catalog order, which varies: not shown.)
SET client_min_messages = warning;
SET legacy_backup.allow_drop = on;
DROP EXTENSION legacy_backup CASCADE;
RESET legacy_backup.allow_drop;
SELECT count(*) AS extensions_left FROM pg_extension WHERE extname = 'legacy_backup';
SELECT count(*) AS event_triggers_left FROM pg_event_trigger WHERE evtname LIKE 'legacy_backup%';
SELECT count(*) = :documents_before AS documents_intact FROM extracted_documents;

-- An empty install drops without confirmation (the baseline alone is not history).
CREATE EXTENSION legacy_backup;
SELECT count(*) > 0 AS baseline_rows FROM category_assignment_logs WHERE source = 'baseline';
DROP EXTENSION legacy_backup CASCADE;
CREATE EXTENSION legacy_backup;
RESET client_min_messages;

#!/usr/bin/env bash
# Red-team suite: every attack a non-superuser application role can try against legacy_backup.
# The application's role `lb_app` owns the database, its schema and every application table (as
# Prisma's migrations leave them) and is a member of legacy_backup_operator. Each attack plants
# something the role may legitimately create, then drives an extension path that would run it.
# An attack counts as BLOCKED only when it left no trace of higher rights (no witness row written
# by another role, lb_app still not superuser) and, where the attack is a forbidden change, the
# change was refused with the expected SQLSTATE and nothing changed.
# Section 14 is another attacker: one who holds only the backup bucket's credentials (not the
# database, not the sealing key), working through the S3 API of the suite's s3s-fs.
# Ends with the plain line 'security: N passed, N failed' (a pass is a blocked attack).
set -uo pipefail
TEST_NAME=security
source "$(dirname "$0")/../integration/lib.sh"
source "$(dirname "$0")/../integration/s3.sh"
set +e
start_s3
BUCKET_DIR=$S3_DIR/data/legacy-import
# The old secret setting stays in the configuration on purpose: it must not be readable (A13).
# job_timeout and max_upload_lag are for A47 (a release without them drops them with a WARNING).
start_cluster_with_worker "legacy_backup.r2_secret_access_key = 'conf-secret-must-stay-hidden'" \
  "legacy_backup.max_snapshot_age = '1h'" "legacy_backup.job_timeout = '2s'" "legacy_backup.max_upload_lag = '5s'" >/dev/null

passed=0; failed=0; failures=()
# psql as the application's role (trust auth on the private socket).
qa() { "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CLUSTER/sock" -p "$PORT" -U lb_app -d app "$@"; }
# SQLSTATE of a statement run as lb_app ('ok' when it succeeded).
state_of() { qa -c "SELECT public.sqlstate_of(\$q\$$1\$q\$)"; }
# SQLSTATE of the first error psql reports for the given -c statements run as lb_app, or
# nothing: for errors raised at COMMIT, which no PL/pgSQL handler can catch.
client_error_of() { qa -c '\set VERBOSITY verbose' "$@" 2>&1 | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' | head -1; }
verdict() { # name blocked(0/1) detail
  if [ "$2" = 1 ]; then passed=$((passed + 1)); echo "  BLOCKED   $1${3:+ ($3)}"
  else failed=$((failed + 1)); failures+=("$1"); echo "  SUCCEEDED $1${3:+ ($3)}"; fi
}
# Rights seen by the attack's payload: witness rows written by anyone but lb_app, and whether
# lb_app became superuser. Resets both.
escalation() {
  local seen
  seen=$(q app -c "SELECT coalesce(string_agg(DISTINCT who || CASE WHEN su THEN '(superuser)' ELSE '' END, ','), '') FROM public.witness WHERE who <> 'lb_app'")
  [ "$(q app -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'lb_app'")" = t ] && seen="$seen lb_app-became-superuser"
  q app -c "ALTER ROLE lb_app NOSUPERUSER" -c "TRUNCATE public.witness"
  echo "$seen"
}
no_escalation() { # name
  local seen; seen=$(escalation)
  if [ -z "$seen" ]; then verdict "$1" 1; else verdict "$1" 0 "payload ran as $seen"; fi
}
# Polls `sql` until it returns `expected` (at most `seconds`); unlike wait_for, never exits.
poll() { # sql expected seconds
  local deadline=$(( $(date +%s) + $3 ))
  while [ "$(q app -c "$1" 2>/dev/null)" != "$2" ]; do
    [ "$(date +%s)" -ge "$deadline" ] && { echo "  (waited $3 s for [$2] from: $1)"; q app -c "SELECT kind, state, last_error FROM legacy_backup.jobs ORDER BY id DESC LIMIT 3"; return 1; }
    sleep 0.2
  done
}
# Resets the witness and lb_app's rights after set-up steps that ran as a superuser on purpose.
reset_witness() { q app -c "ALTER ROLE lb_app NOSUPERUSER" -c "TRUNCATE public.witness" >/dev/null; }
refused_with() { # name expected-sqlstate(s, as a regex) actual-sqlstate
  if [[ "$3" =~ ^($2)$ ]]; then verdict "$1" 1 "refused, SQLSTATE $3"; else verdict "$1" 0 "SQLSTATE $3, expected $2"; fi
}

echo "setup: lb_app owns database app, its schema and tables"
q postgres -c "CREATE ROLE lb_app LOGIN" -c "CREATE ROLE lb_nobody LOGIN" -c "CREATE DATABASE app OWNER lb_app" >/dev/null
"$BIN/psql" -X -q -h "$CLUSTER/sock" -p "$PORT" -U lb_app -d app -v ON_ERROR_STOP=1 \
  -f "$ROOT/tests/fixtures/app_schema.sql" -v sid=s1 -v docs=200 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
qa -v sid=s2 -v docs=50 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
qa -v sid=s3 -v docs=50 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
q app -c "CREATE EXTENSION legacy_backup" -c "GRANT legacy_backup_operator TO lb_app" >/dev/null \
  || { echo "setup failed: CREATE EXTENSION"; exit 1; }
# The payload: records who runs it, then tries to make lb_app superuser.
PAYLOAD_SQL="
CREATE TABLE public.witness (attack text, who text, su bool);
GRANT INSERT ON public.witness TO PUBLIC;
CREATE FUNCTION public.payload(tag text) RETURNS boolean LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO public.witness SELECT tag, current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    BEGIN EXECUTE 'ALTER ROLE lb_app SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
    RETURN true;
END \$\$;"
qa -c "$PAYLOAD_SQL" >/dev/null
qa <<'SQL' >/dev/null
CREATE FUNCTION public.payload_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM public.payload(TG_NAME); RETURN coalesce(NEW, OLD); END $$;
CREATE FUNCTION public.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN EXECUTE statement; RETURN 'ok';
EXCEPTION WHEN others THEN RETURN SQLSTATE; END $$;
SQL
wait_for "worker running" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 20 >/dev/null

echo "1. triggers of the application's role fired by the extension"
qa -c "CREATE TRIGGER evil_audit AFTER INSERT ON legacy_import_audit_logs FOR EACH ROW EXECUTE FUNCTION public.payload_trigger()"
qa -c "SELECT legacy_snapshot_take('s1')" >/dev/null
no_escalation "A1 trigger on legacy_import_audit_logs, fired by legacy_snapshot_take"
qa -c "CREATE TRIGGER evil_session BEFORE UPDATE ON legacy_import_sessions FOR EACH ROW EXECUTE FUNCTION public.payload_trigger()"
qa -c "SELECT legacy_snapshot_take('s1')" >/dev/null
no_escalation "A2 trigger on legacy_import_sessions, fired by legacy_snapshot_take"
id=$(qa -c "SELECT legacy_snapshot_take('s2')->>'snapshotId'")
q app -c "TRUNCATE public.witness"
poll "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id'" uploaded 20
no_escalation "A3 trigger on legacy_import_audit_logs, fired by the worker's SNAPSHOT_UPLOADED row"
qa -c "DROP TRIGGER evil_audit ON legacy_import_audit_logs" -c "DROP TRIGGER evil_session ON legacy_import_sessions"
qa <<'SQL'
CREATE FUNCTION public.evil_index(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.payload('index expression'); RETURN $1; END $$;
CREATE INDEX evil_index ON legacy_import_audit_logs (public.evil_index(id));
SQL
qa -c "SELECT legacy_snapshot_take('s1')" >/dev/null
no_escalation "A4 index expression on legacy_import_audit_logs"
qa -c "DROP INDEX IF EXISTS evil_index"
# An index whose expression the planner folds when it loads the index (an IMMUTABLE function of
# a constant): it would run as whoever plans a query on the table, e.g. the worker's scheduler.
qa <<'SQL'
CREATE FUNCTION public.fold(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.payload('planner folding an index expression'); RETURN t; END $$;
SQL
refused_with "A4f an index on legacy_import_sessions whose expression the planner folds" LB006 \
  "$(state_of "CREATE INDEX evil_fold ON legacy_import_sessions ((id || public.fold('x')))")"
q app -c "DELETE FROM public.witness WHERE who = 'lb_app'" >/dev/null
sleep 2
no_escalation "A4f' nothing planned it with higher rights meanwhile"
qa -c "DROP INDEX IF EXISTS evil_fold"
qa -c "ALTER TABLE legacy_import_audit_logs ADD COLUMN evil boolean DEFAULT public.payload('column default')"
qa -c "SELECT legacy_snapshot_take('s1')" >/dev/null
no_escalation "A5 column default on legacy_import_audit_logs"
qa -c "ALTER TABLE legacy_import_audit_logs DROP COLUMN evil"
qa -c "CREATE RULE evil_rule AS ON INSERT TO legacy_import_audit_logs DO ALSO SELECT public.payload('rule')"
qa -c "SELECT legacy_snapshot_take('s1')" >/dev/null
no_escalation "A5r rule on legacy_import_audit_logs"
qa -c "DROP RULE evil_rule ON legacy_import_audit_logs"
qa <<'SQL'
ALTER TABLE legacy_import_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE legacy_import_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY evil_policy ON legacy_import_sessions USING (public.payload('row security policy'));
SQL
qa -c "SELECT legacy_snapshot_take('s1')" >/dev/null
no_escalation "A5p row-level security policy on legacy_import_sessions"
qa -c "DROP POLICY evil_policy ON legacy_import_sessions" -c "ALTER TABLE legacy_import_sessions NO FORCE ROW LEVEL SECURITY" \
   -c "ALTER TABLE legacy_import_sessions DISABLE ROW LEVEL SECURITY"
qa -c "CREATE TRIGGER evil_docs AFTER UPDATE ON extracted_documents FOR EACH ROW EXECUTE FUNCTION public.payload_trigger()"
qa -c "SET legacy_backup.actor = 'u-paralegal'" -c "UPDATE extracted_documents SET status = 'Skipped', category_id = NULL, updated_at = now() WHERE id = (SELECT min(id) FROM extracted_documents WHERE session_id = 's2')"
q app -c "TRUNCATE public.witness"
qa -c "SELECT legacy_undo_last_categorization('u-paralegal')" >/dev/null
no_escalation "A6 trigger on extracted_documents, fired by legacy_undo_last_categorization"
q app -c "UPDATE extracted_documents SET status = 'Skipped', category_id = NULL, updated_at = now() WHERE id = (SELECT max(id) FROM extracted_documents WHERE session_id = 's2')" 
reset_witness
q app -c "SELECT legacy_restore_snapshot('$id', 'u-partner', false)" >/dev/null
no_escalation "A7 trigger on extracted_documents, fired by a partner's legacy_restore_snapshot"
qa -c "DROP TRIGGER evil_docs ON extracted_documents"
# The application's trigger makes its own change while a partner's restore runs: that change
# must not be recorded as the restore, nor in the partner's name.
qa <<'SQL'
CREATE FUNCTION public.piggyback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('legacy_backup.change_source', true) IS DISTINCT FROM 'restore' OR pg_trigger_depth() > 1 THEN
        RETURN NULL;
    END IF;
    -- (Qualified: the application's code runs with the extension's search_path, pg_catalog only.)
    UPDATE public.extracted_documents SET category_id = NULL, status = 'Skipped', updated_at = now()
    WHERE id = (SELECT max(id) FROM public.extracted_documents WHERE session_id = 's1') AND status <> 'Skipped';
    RETURN NULL;
END $$;
CREATE TRIGGER piggyback AFTER UPDATE ON extracted_documents FOR EACH STATEMENT EXECUTE FUNCTION public.piggyback();
SQL
# A document whose state differs from the snapshot, so the restore has something to write.
in_snapshot=$(q app -c "SELECT d->>'status' FROM legacy_backup.snapshots s, json_array_elements(convert_from(s.body, 'UTF8')::json->'documents') d
                        WHERE s.id = '$id' AND d->>'id' = (SELECT min(id) FROM extracted_documents WHERE session_id = 's2')")
other=Skipped; [ "$in_snapshot" = Skipped ] && other=Uncategorized
q app -c "UPDATE extracted_documents SET status = '$other', category_id = NULL, updated_at = now() WHERE id = (SELECT min(id) FROM extracted_documents WHERE session_id = 's2')" >/dev/null
q app -c "UPDATE extracted_documents SET status = 'Categorized', updated_at = now() WHERE id = (SELECT max(id) FROM extracted_documents WHERE session_id = 's1')" >/dev/null
q app -c "SELECT legacy_restore_snapshot('$id', 'u-partner', false)" >/dev/null
forged=$(q app -c "SELECT count(*) FROM category_assignment_logs WHERE session_id = 's1' AND (source = 'restore' OR changed_by = 'u-partner') AND changed_at > now() - interval '1 minute'")
if [ "$forged" = 0 ]; then verdict "A7n the application's nested change recorded as the partner's restore" 1; else verdict "A7n the application's nested change recorded as the partner's restore" 0 "$forged forged row(s)"; fi
qa -c "DROP TRIGGER piggyback ON extracted_documents"
# The application's BEFORE trigger rewrites the rows a partner's restore writes: its values would
# be logged as the restore, in the partner's name.
qa <<'SQL'
CREATE FUNCTION public.rewrite_restore() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('legacy_backup.change_source', true) = 'restore' THEN
        NEW.status := 'Skipped'; NEW.category_id := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER rewrite_restore BEFORE UPDATE ON extracted_documents FOR EACH ROW EXECUTE FUNCTION public.rewrite_restore();
SQL
# (The same document as above, put in a state its snapshot does not hold, so the restore writes it.)
q app -c "UPDATE extracted_documents SET status = '$other', category_id = NULL, updated_at = now() WHERE id = (SELECT min(id) FROM extracted_documents WHERE session_id = 's2')" >/dev/null
refused_with "A7b a BEFORE trigger of the application rewrites the rows of a partner's restore" 09000 \
  "$(q app -c "SELECT public.sqlstate_of(\$q\$SELECT legacy_restore_snapshot('$id', 'u-partner', false)\$q\$)")"
qa -c "DROP TRIGGER rewrite_restore ON extracted_documents"

echo "2. operators and casts planted in the application's schema"
qa <<'SQL'
CREATE FUNCTION public.evil_enum_eq(a "DocumentCategorizationStatus", b "DocumentCategorizationStatus") RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.payload('= on DocumentCategorizationStatus'); RETURN a::text = b::text; END $$;
CREATE OPERATOR public.= (LEFTARG = "DocumentCategorizationStatus", RIGHTARG = "DocumentCategorizationStatus", FUNCTION = public.evil_enum_eq);
SQL
qa -c "UPDATE extracted_documents SET status = 'Skipped', category_id = NULL, updated_at = now() WHERE id = (SELECT max(id) FROM extracted_documents WHERE session_id = 's3')"
no_escalation "A8 '=' on the document status enum, reached by the audit trigger (IS DISTINCT FROM)"
qa -c "DROP OPERATOR public.= (\"DocumentCategorizationStatus\", \"DocumentCategorizationStatus\")"
qa <<'SQL'
CREATE FUNCTION public.evil_session_eq(a "ImportSessionStatus", b "ImportSessionStatus") RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.payload('= on ImportSessionStatus'); RETURN a::text = b::text; END $$;
CREATE OPERATOR public.= (LEFTARG = "ImportSessionStatus", RIGHTARG = "ImportSessionStatus", FUNCTION = public.evil_session_eq);
SQL
sleep 3 # the worker's scheduler runs every second
no_escalation "A9 '=' on the session status enum, reached by the worker's scheduler"
qa -c "SELECT legacy_export_readiness('s1')" >/dev/null
no_escalation "A10 '=' on the session status enum, reached by legacy_export_readiness"
qa -c "DROP OPERATOR public.= (\"ImportSessionStatus\", \"ImportSessionStatus\")"
qa <<'SQL'
CREATE FUNCTION public.evil_to_text(s "DocumentCategorizationStatus") RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.payload('cast to text'); RETURN 'Categorized'; END $$;
CREATE CAST ("DocumentCategorizationStatus" AS text) WITH FUNCTION public.evil_to_text("DocumentCategorizationStatus");
CREATE FUNCTION public.evil_to_json(s "ImportSessionStatus") RETURNS json LANGUAGE plpgsql AS $$
BEGIN PERFORM public.payload('cast to json'); RETURN '"InProgress"'; END $$;
CREATE CAST ("ImportSessionStatus" AS json) WITH FUNCTION public.evil_to_json("ImportSessionStatus");
SQL
qa -c "UPDATE extracted_documents SET status = 'Uncategorized', updated_at = now() WHERE id = (SELECT max(id) FROM extracted_documents WHERE session_id = 's3')"
no_escalation "A11 cast of the document status enum to text, reached by the audit trigger"
qa -c "SELECT legacy_snapshot_take('s3')" >/dev/null
no_escalation "A12 cast of the session status enum to json, reached by legacy_snapshot_take"
qa -c "DROP CAST (\"DocumentCategorizationStatus\" AS text)" -c "DROP CAST (\"ImportSessionStatus\" AS json)"
# An IMPLICIT cast: an enum compared with a literal would resolve to text operators through it.
qa <<'SQL'
CREATE FUNCTION public.evil_implicit(s "DocumentCategorizationStatus") RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.payload('implicit cast of DocumentCategorizationStatus'); RETURN format('%s', s); END $$;
CREATE CAST ("DocumentCategorizationStatus" AS text) WITH FUNCTION public.evil_implicit("DocumentCategorizationStatus") AS IMPLICIT;
CREATE FUNCTION public.evil_implicit_s(s "ImportSessionStatus") RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.payload('implicit cast of ImportSessionStatus'); RETURN format('%s', s); END $$;
CREATE CAST ("ImportSessionStatus" AS text) WITH FUNCTION public.evil_implicit_s("ImportSessionStatus") AS IMPLICIT;
SQL
qa -c "INSERT INTO extracted_documents (id, session_id, file_name, file_extension, file_size_bytes, storage_path, folder_path, status, updated_at)
       VALUES ('s3-implicit', 's3', 'x.pdf', 'pdf', 1, 'documents/s3/x.pdf', '/', 'Uncategorized', now())"
qa -c "UPDATE extracted_documents SET status = 'Skipped', updated_at = now() WHERE id = 's3-implicit'"
sleep 3 # the worker's scheduler compares the session status too
no_escalation "A12i IMPLICIT casts of both enums to text, reached by the audit triggers and the worker's scheduler"
qa -c "DROP CAST (\"DocumentCategorizationStatus\" AS text)" -c "DROP CAST (\"ImportSessionStatus\" AS text)"

echo "3. pulling the cleanup forward"
mkdir -p "$BUCKET_DIR/documents/s2"; echo keep >"$BUCKET_DIR/documents/s2/a.pdf"
qa -c "SELECT legacy_snapshot_take('s2')" >/dev/null
poll "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 's2' AND upload_state <> 'uploaded'" 0 20
qa -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 's2'"
refused_with "A13 UPDATE cleanup_scheduled_at = now() by the application" LB005 \
  "$(state_of "UPDATE legacy_import_sessions SET cleanup_scheduled_at = now() - interval '1 second' WHERE id = 's2'")"
qa <<'SQL'
CREATE FUNCTION public.pull_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.cleanup_scheduled_at := now() - interval '1 second'; RETURN NEW; END $$;
CREATE TRIGGER zzz_pull_forward BEFORE UPDATE ON legacy_import_sessions FOR EACH ROW EXECUTE FUNCTION public.pull_forward();
SQL
refused_with "A14 a BEFORE trigger firing after the gate rewrites cleanup_scheduled_at" LB005 \
  "$(state_of "UPDATE legacy_import_sessions SET updated_at = now() WHERE id = 's2'")"
qa -c "DROP TRIGGER zzz_pull_forward ON legacy_import_sessions"
sleep 3
check_kept=$(ls "$BUCKET_DIR/documents/s2" 2>/dev/null | wc -l)
if [ "$check_kept" = 1 ]; then verdict "A15 the worker deletes nothing before cleanup_delay" 1; else verdict "A15 the worker deletes nothing before cleanup_delay" 0 "documents/s2 deleted"; fi
# A session that shows Exported without ever passing the gate (a superuser slipped it in with the
# check off): postponing must not create a schedule, which the worker would act on.
q app -c "SET legacy_backup.allow_drop = on" -c "ALTER TABLE legacy_import_sessions DISABLE TRIGGER legacy_backup_export_check_insert" \
      -c "INSERT INTO legacy_import_sessions (id, firm_id, pst_file_name, pst_file_size, uploaded_by, status, updated_at) VALUES ('sz', 'f', 'z.pst', 1, 'u', 'Exported', now())" \
      -c "ALTER TABLE legacy_import_sessions ENABLE TRIGGER legacy_backup_export_check_insert" >/dev/null
refused_with "A15p postponing a cleanup for a session that has no schedule (never exported through the gate)" 55000 \
  "$(state_of "SELECT legacy_postpone_cleanup('sz', 'u-partner', now() + interval '3 seconds')")"
# Only the extension's cleanup marks a session cleaned up: a mark set by the application would
# hide files that were never deleted and keep the worker from ever deleting them.
refused_with "A15m marking an exported session cleaned up without the cleanup (its files would never be deleted)" LB004 \
  "$(state_of "UPDATE legacy_import_sessions SET cleaned_up_at = now(), updated_at = now() WHERE id = 'sz'")"
refused_with "A15c clearing cleaned_up_at (it would queue the cleanup again)" LB004 \
  "$(q app -c "SET legacy_backup.change_source = cleanup" -c "UPDATE legacy_import_sessions SET cleaned_up_at = now(), updated_at = now() WHERE id = 'sz'" >/dev/null; state_of "UPDATE legacy_import_sessions SET cleaned_up_at = NULL, updated_at = now() WHERE id = 'sz'")"

echo "4. silencing the audit trail"
# Puts the triggers back after an attack that got through (a no-op when it was refused).
repair() {
  q app -c "SET legacy_backup.allow_drop = on" \
    -c "DO \$\$ BEGIN IF to_regclass('public.ed_real') IS NOT NULL THEN ALTER TABLE public.ed_real RENAME TO extracted_documents; END IF; END \$\$" \
    -c "DROP TABLE IF EXISTS public.ed_child" \
    -c "DO \$\$ BEGIN IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'extracted_documents'::regclass AND attname = 'category_old') THEN ALTER TABLE extracted_documents RENAME COLUMN category_old TO category_id; END IF; END \$\$" \
    -c "ALTER TABLE extracted_documents ALTER COLUMN categorized_by TYPE text" \
    -c "DROP TRIGGER IF EXISTS renamed ON extracted_documents" -c "ALTER TABLE extracted_documents ENABLE TRIGGER ALL" \
    -c "ALTER TABLE legacy_import_sessions ENABLE TRIGGER ALL" -c "SELECT count(*) FROM legacy_backup_attach()" >/dev/null
}
for change in "DISABLE TRIGGER legacy_backup_log_update" "ENABLE REPLICA TRIGGER legacy_backup_log_update" \
              "DISABLE TRIGGER ALL" "DISABLE TRIGGER USER"; do
  # (DISABLE TRIGGER ALL also reaches the foreign-key triggers: PostgreSQL itself refuses it to
  # anyone but a superuser, with 42501.)
  refused_with "A16 ALTER TABLE extracted_documents $change" "LB006|42501" "$(state_of "ALTER TABLE extracted_documents $change")"; repair
done
st=$(q app -c "SELECT public.sqlstate_of('ALTER TABLE extracted_documents DISABLE TRIGGER ALL')")
refused_with "A16s a superuser's ALTER TABLE extracted_documents DISABLE TRIGGER ALL without allow_drop" LB006 "$st"; repair
refused_with "A17 DROP TRIGGER legacy_backup_log_update" LB006 "$(state_of "DROP TRIGGER legacy_backup_log_update ON extracted_documents")"; repair
refused_with "A18 ALTER TRIGGER legacy_backup_log_update RENAME" LB006 \
  "$(state_of "ALTER TRIGGER legacy_backup_log_update ON extracted_documents RENAME TO renamed")"; repair
refused_with "A19 ALTER TABLE legacy_import_sessions DISABLE TRIGGER legacy_backup_export_gate" LB006 \
  "$(state_of "ALTER TABLE legacy_import_sessions DISABLE TRIGGER legacy_backup_export_gate")"; repair
refused_with "A19r ALTER TABLE extracted_documents RENAME (a view could take its name)" LB006 \
  "$(state_of "ALTER TABLE extracted_documents RENAME TO ed_real")"; repair
refused_with "A19c a child table (its rows escape the statement triggers)" LB006 \
  "$(state_of "CREATE TABLE public.ed_child () INHERITS (extracted_documents)")"; repair
qa -c "CREATE DOMAIN public.evil_text AS text"
refused_with "A19t retyping a column the extension reads (categorized_by to a domain)" LB006 \
  "$(state_of "ALTER TABLE extracted_documents ALTER COLUMN categorized_by TYPE public.evil_text")"; repair
refused_with "A19i changing a document's id in the same UPDATE as its category" LB008 \
  "$(state_of "UPDATE extracted_documents SET id = id || '~', category_id = NULL, status = 'Skipped', updated_at = now() WHERE id = (SELECT min(id) FROM extracted_documents WHERE session_id = 's3')")"
qa -c "INSERT INTO legacy_import_sessions (id, firm_id, pst_file_name, pst_file_size, uploaded_by, status, updated_at) VALUES ('sx', 'f', 'x.pst', 1, 'u', 'InProgress', now())"
refused_with "A19s changing a session's id (its schedule and keys hang on it)" LB008 \
  "$(state_of "UPDATE legacy_import_sessions SET id = 'sy' WHERE id = 'sx'")"
refused_with "A19e ALTER TYPE … RENAME VALUE on the session status enum" 55000 \
  "$(state_of "ALTER TYPE \"ImportSessionStatus\" RENAME VALUE 'InProgress' TO 'Exported2'")"
refused_with "A19e' ALTER TYPE … RENAME VALUE on the document status enum (a silent swap)" 55000 \
  "$(state_of "ALTER TYPE \"DocumentCategorizationStatus\" RENAME VALUE 'Skipped' TO 'Skipped2'")"
# Since 0.4.0 PostgreSQL refuses it itself (0A000): the audit trigger's WHEN clause uses the column.
refused_with "A19w rewriting category_id in place (ALTER COLUMN … TYPE text USING …)" "LB006|0A000" \
  "$(state_of "ALTER TABLE extracted_documents ALTER COLUMN category_id TYPE text USING CASE WHEN id = 'x' THEN 'y' ELSE category_id END")"; repair
refused_with "A19m renaming category_id away (to swap in another column)" LB006 \
  "$(state_of "ALTER TABLE extracted_documents RENAME COLUMN category_id TO category_old")"; repair
# A superuser may still switch the trail off on purpose (allow_drop): health and the gate notice.
q app -c "SET legacy_backup.allow_drop = on" -c "ALTER TABLE extracted_documents ENABLE REPLICA TRIGGER legacy_backup_log_update" >/dev/null 2>&1
healthy=$(q app -c "SELECT ok FROM legacy_backup_health() WHERE check_name = 'trigger extracted_documents.legacy_backup_log_update'")
if [ "$healthy" = f ]; then verdict "A20 health stays green with the log trigger ENABLE REPLICA" 1; else verdict "A20 health stays green with the log trigger ENABLE REPLICA" 0 "health ok=$healthy"; fi
qa -c "SELECT legacy_snapshot_take('s3')" >/dev/null
refused_with "A21 export while the audit trail is not recording" LB007 \
  "$(state_of "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 's3'")"
repair

echo "5. drop paths"
q postgres -c "CREATE ROLE lb_dba SUPERUSER LOGIN" -c "CREATE DATABASE owned OWNER lb_dba" >/dev/null
"$BIN/psql" -X -q -h "$CLUSTER/sock" -p "$PORT" -U lb_dba -d owned -v ON_ERROR_STOP=1 \
  -f "$ROOT/tests/fixtures/app_schema.sql" -v sid=o1 -v docs=20 -f "$ROOT/tests/fixtures/seed.sql" \
  -c "CREATE EXTENSION legacy_backup" -c "SELECT legacy_snapshot_take('o1')" >/dev/null 2>&1
st=$("$BIN/psql" -X -q -At -h "$CLUSTER/sock" -p "$PORT" -U postgres -d owned -c "DROP OWNED BY lb_dba CASCADE" 2>&1 >/dev/null | grep -o 'ERROR' | head -1)
left=$("$BIN/psql" -X -q -At -h "$CLUSTER/sock" -p "$PORT" -U postgres -d owned -c "SELECT count(*) FROM legacy_backup.snapshots" 2>/dev/null || echo 0)
if [ "$st" = ERROR ] && [ "$left" = 1 ]; then verdict "A22 DROP OWNED BY the extension's owner CASCADE" 1 "refused, snapshot kept"; else verdict "A22 DROP OWNED BY the extension's owner CASCADE" 0 "snapshots left: $left"; fi

# A view in place of an application table: the extension must never read it with its rights.
q postgres -c "CREATE DATABASE viewdb OWNER lb_app" >/dev/null
"$BIN/psql" -X -q -h "$CLUSTER/sock" -p "$PORT" -U lb_app -d viewdb -v ON_ERROR_STOP=1 \
  -f "$ROOT/tests/fixtures/app_schema.sql" -v sid=v1 -v docs=5 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
"$BIN/psql" -X -q -h "$CLUSTER/sock" -p "$PORT" -U postgres -d viewdb -c "CREATE EXTENSION legacy_backup" -c "GRANT legacy_backup_operator TO lb_app" >/dev/null 2>&1
"$BIN/psql" -X -q -h "$CLUSTER/sock" -p "$PORT" -U lb_app -d viewdb -c "$PAYLOAD_SQL" >/dev/null 2>&1
"$BIN/psql" -X -q -h "$CLUSTER/sock" -p "$PORT" -U lb_app -d viewdb -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<'SQL'
CREATE TABLE public.sessions_kept AS SELECT * FROM legacy_import_sessions;
DROP TABLE legacy_import_sessions CASCADE;
CREATE VIEW legacy_import_sessions AS SELECT * FROM public.sessions_kept WHERE public.payload('view in place of legacy_import_sessions');
SQL
"$BIN/psql" -X -q -h "$CLUSTER/sock" -p "$PORT" -U postgres -d viewdb -c "SELECT legacy_export_readiness('v1')" >/dev/null 2>&1
"$BIN/psql" -X -q -h "$CLUSTER/sock" -p "$PORT" -U lb_app -d viewdb -c "SELECT legacy_snapshot_take('v1')" >/dev/null 2>&1
seen=$("$BIN/psql" -X -q -At -h "$CLUSTER/sock" -p "$PORT" -U postgres -d viewdb -c "SELECT count(*) FROM public.witness WHERE who <> 'lb_app'")
su=$(q app -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'lb_app'")
if [ "$seen" = 0 ] && [ "$su" = f ]; then verdict "A22v a view in place of legacy_import_sessions, read by readiness and snapshot" 1; else verdict "A22v a view in place of legacy_import_sessions" 0 "witness rows by others: $seen, lb_app superuser: $su"; fi
q app -c "ALTER ROLE lb_app NOSUPERUSER" >/dev/null

# A transaction left open for longer than cleanup_delay must not schedule a cleanup already due.
q postgres -c "ALTER DATABASE app SET legacy_backup.cleanup_delay = '4s'" >/dev/null
qa -v sid=s5 -v docs=5 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
qa -c "BEGIN" -c "SELECT 1" -c "SELECT pg_sleep(5)" -c "SELECT legacy_snapshot_take('s5')" \
   -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 's5'" -c "COMMIT" >/dev/null 2>&1
early=$(q app -c "SELECT scheduled_at <= now() FROM legacy_backup.cleanup_schedule WHERE session_id = 's5'")
q postgres -c "ALTER DATABASE app RESET legacy_backup.cleanup_delay" >/dev/null
if [ "$early" = f ]; then verdict "A22t a long transaction schedules a cleanup that is due at commit" 1; else verdict "A22t a long transaction schedules a cleanup that is due at commit" 0 "due at once: [$early]"; fi

echo "6. the secret"
q postgres -c "GRANT pg_read_all_settings, pg_monitor TO lb_app" >/dev/null
shown=$(qa -c "SELECT current_setting('legacy_backup.r2_secret_access_key', true)" 2>/dev/null)
listed=$(qa -c "SELECT count(*) FROM pg_settings WHERE setting LIKE '%conf-secret%'" 2>/dev/null)
if [ -z "$shown" ] && [ "$listed" = 0 ]; then verdict "A23 pg_read_all_settings member reads the secret" 1; else verdict "A23 pg_read_all_settings member reads the secret" 0 "current_setting: [$shown], pg_settings rows: $listed"; fi

leaked=$(grep -c 'conf-secret-must-stay-hidden' "$CLUSTER/server.log")
named=$(grep -c 'legacy_backup.r2_secret_access_key' "$CLUSTER/server.log")
if [ "$leaked" = 0 ] && [ "$named" -ge 1 ]; then verdict "A23l the secret from postgresql.conf reaches the server log" 1 "the WARNING names the setting, not its value"; else verdict "A23l the secret from postgresql.conf reaches the server log" 0 "value in log: $leaked line(s), setting named: $named"; fi

echo "7. SECURITY DEFINER helpers executable by PUBLIC"
n=$(q app -c "SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e' JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'legacy_backup' WHERE p.prosecdef AND has_function_privilege('public', p.oid, 'EXECUTE')")
if [ "$n" = 0 ]; then verdict "A24 a SECURITY DEFINER function of the extension executable by PUBLIC" 1; else verdict "A24 a SECURITY DEFINER function of the extension executable by PUBLIC" 0 "$n function(s)"; fi
st=$("$BIN/psql" -X -q -At -h "$CLUSTER/sock" -p "$PORT" -U lb_nobody -d app -c "SELECT legacy_backup_export_verdict('s1')" 2>&1 | grep -c 'snapshotKey')
if [ "$st" = 0 ]; then verdict "A25 any login role reads snapshot keys through legacy_backup_export_verdict" 1; else verdict "A25 any login role reads snapshot keys through legacy_backup_export_verdict" 0; fi

echo "8. claims taken on trust"
sid=$(qa -c "SELECT legacy_snapshot_take('s3')->>'snapshotId'")
by=$(q app -c "SELECT taken_by FROM legacy_backup.snapshots WHERE id = '$sid'")
if [ "$by" = "pg:lb_app" ]; then verdict "A26 a snapshot without an actor is credited to the extension's owner" 1; else verdict "A26 a snapshot without an actor is credited to the extension's owner" 0 "taken_by $by"; fi
role=$(q app -c "SELECT details->>'dbRole' FROM legacy_import_audit_logs WHERE action = 'CATEGORIZATION_SNAPSHOT' ORDER BY \"timestamp\" DESC LIMIT 1")
if [ "$role" = lb_app ]; then verdict "A27 audit rows do not say which database role acted" 1; else verdict "A27 audit rows do not say which database role acted" 0 "dbRole [$role]"; fi
q app -c "UPDATE extracted_documents SET status = 'Skipped', category_id = NULL, updated_at = now() WHERE id = (SELECT min(id) FROM extracted_documents WHERE session_id = 's2')" >/dev/null
q app -c "SELECT legacy_restore_snapshot('$id', 'u-partner', false)" >/dev/null
refused_with "A28 an operator undoes a partner's restore in the partner's name" P0002 \
  "$(state_of "SELECT legacy_undo_last_categorization('u-partner')")"

echo "9. hostile ids"
qa -c "INSERT INTO legacy_import_sessions (id, firm_id, pst_file_name, pst_file_size, uploaded_by, status, updated_at) VALUES ('.', 'f', 'x.pst', 1, 'u', 'InProgress', now())"
refused_with "A29 a session id made only of dots" 22023 "$(state_of "SELECT legacy_snapshot_take('.')")"

echo "10. TRUNCATE and DELETE"
refused_with "A30 TRUNCATE extracted_documents (no row trigger would see it)" LB009 "$(state_of "TRUNCATE extracted_documents")"
refused_with "A30s TRUNCATE legacy_import_sessions CASCADE" LB009 "$(state_of "TRUNCATE legacy_import_sessions CASCADE")"
had=$(q app -c "SELECT scheduled_at FROM legacy_backup.cleanup_schedule WHERE session_id = 's5'")
qa -c "DELETE FROM legacy_import_sessions WHERE id = 's5'" >/dev/null
kept=$(q app -c "SELECT scheduled_at FROM legacy_backup.cleanup_schedule WHERE session_id = 's5' AND deleted_at IS NOT NULL")
if [ -n "$had" ] && [ "$had" = "$kept" ]; then verdict "A30d a deleted exported session keeps its schedule (no earlier cleanup by deleting)" 1; else verdict "A30d a deleted exported session keeps its schedule (no earlier cleanup by deleting)" 0 "schedule before [$had], after [$kept]"; fi
# The application re-creates the id, exports it through the gate, then deletes it again: the
# schedule counts from the export, never from the first delete.
qa -c "INSERT INTO legacy_import_sessions (id, firm_id, pst_file_name, pst_file_size, uploaded_by, status, updated_at) VALUES ('s5', 'f', 'x.pst', 1, 'u', 'InProgress', now())" >/dev/null
refused_with "A30e a row re-created under a deleted session's id cannot claim its schedule" LB005 \
  "$(state_of "UPDATE legacy_import_sessions SET cleanup_scheduled_at = '$had', updated_at = now() WHERE id = 's5'")"
refused_with "A30f the application cannot mark a deleted session's files cleaned up" 42501 \
  "$(state_of "UPDATE legacy_backup.cleanup_schedule SET cleaned_up_at = now() WHERE session_id = 's5'")"

echo "11. the UPDATE trail's buffer and the export pin (0.4.0)"
qa -v sid=s7 -v docs=30 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
qa -c "CREATE TABLE public.fake_docs (LIKE extracted_documents)" >/dev/null
refused_with "A31 the trail's row function on a table of the application's (forged log rows)" "42501|LB006" \
  "$(state_of "CREATE TRIGGER forge AFTER UPDATE ON public.fake_docs FOR EACH ROW EXECUTE FUNCTION legacy_backup_log_change()")"
refused_with "A31f the trail's flush on a table of the application's" "42501|LB006" \
  "$(state_of "CREATE TRIGGER forge AFTER UPDATE ON public.fake_docs FOR EACH STATEMENT EXECUTE FUNCTION legacy_backup_log_flush()")"
# A BEFORE trigger uncategorizes a document on an UPDATE that names neither category_id nor
# status, so no flush fires: the commit must be refused, and the document keep its category.
qa >/dev/null <<'SQL'
CREATE FUNCTION public.sneak() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.document_type = 'sneak' THEN NEW.category_id := NULL; NEW.status := 'Uncategorized'; END IF; RETURN NEW; END $$;
CREATE TRIGGER aa_sneak BEFORE UPDATE ON extracted_documents FOR EACH ROW EXECUTE FUNCTION public.sneak();
SQL
doc=$(q app -c "SELECT min(id) FROM extracted_documents WHERE session_id = 's7' AND status = 'Categorized'")
code=$(client_error_of -c "UPDATE extracted_documents SET document_type = 'sneak' WHERE id = '$doc'")
kept=$(q app -c "SELECT status FROM extracted_documents WHERE id = '$doc'")
refused_with "A32 a BEFORE trigger uncategorizes a document where no audit row is written (status now: $kept)" 55000 "${code:-ok}"
qa -c "DROP TRIGGER aa_sneak ON extracted_documents" >/dev/null
# A change during a begun export, hidden behind a snapshot taken after it: the upload missed it.
qa -c "SELECT legacy_export_begin('s7', 'u-partner')" >/dev/null
qa -c "UPDATE extracted_documents SET category_id = NULL, status = 'Uncategorized', updated_at = now() WHERE id = '$doc'" >/dev/null
qa -c "SELECT legacy_snapshot_take('s7')" >/dev/null
refused_with "A33 a change during a begun export, hidden behind a newer snapshot" LB003 \
  "$(state_of "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 's7'")"
refused_with "A34 pinning an export by writing legacy_backup.export_begins" 42501 \
  "$(state_of "INSERT INTO legacy_backup.export_begins (session_id, snapshot_id, begun_by) SELECT 's7', max(id), 'u' FROM legacy_snapshots")"
refused_with "A35 the application claims to be the extension's cleanup (change_source = cleanup)" 42501 \
  "$(state_of "SET legacy_backup.change_source = 'cleanup'")"


echo "12. an independent attacker's read of 0.4.0"
# H1: rows buffered at an outer level must not be flushed inside a savepoint that rolls back.
qa >/dev/null <<'SQL'
CREATE FUNCTION public.sneak2() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.primary_language = 'sneak' THEN NEW.category_id := NULL; NEW.status := 'Uncategorized'; END IF; RETURN NEW; END $$;
CREATE TRIGGER aa_sneak2 BEFORE UPDATE ON extracted_documents FOR EACH ROW EXECUTE FUNCTION public.sneak2();
SQL
doc=$(q app -c "SELECT min(id) FROM extracted_documents WHERE session_id = 's7' AND status = 'Categorized'")
code=$(client_error_of -c "BEGIN" -c "UPDATE extracted_documents SET primary_language = 'sneak' WHERE id = '$doc'" \
          -c "SAVEPOINT s" -c "UPDATE extracted_documents SET status = status WHERE false" -c "ROLLBACK TO s" -c "COMMIT")
refused_with "A36 an outer change flushed inside a savepoint that is rolled back (status now: $(q app -c "SELECT status FROM extracted_documents WHERE id = '$doc'"))" 55000 "${code:-ok}"
qa -c "DROP TRIGGER aa_sneak2 ON extracted_documents" >/dev/null
qa >/dev/null <<'SQL'
CREATE FUNCTION public.swallow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() = 1 THEN
        BEGIN UPDATE extracted_documents SET status = status WHERE false; RAISE EXCEPTION 'x';
        EXCEPTION WHEN others THEN NULL; END;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_swallow AFTER UPDATE ON extracted_documents FOR EACH ROW EXECUTE FUNCTION public.swallow();
SQL
doc=$(q app -c "SELECT min(id) FROM extracted_documents WHERE session_id = 's7' AND category_id IS NOT NULL")
before=$(q app -c "SELECT count(*) FROM category_assignment_logs WHERE document_id = '$doc'")
qa -c "UPDATE extracted_documents SET category_id = NULL, status = 'Uncategorized' WHERE id = '$doc'" >/dev/null 2>&1
after=$(q app -c "SELECT count(*) FROM category_assignment_logs WHERE document_id = '$doc'")
changed=$(q app -c "SELECT category_id IS NULL FROM extracted_documents WHERE id = '$doc'")
if [ "$changed" = f ] || [ "$after" -gt "$before" ]; then verdict "A37 an application trigger swallows the flush in a failed savepoint" 1 "log rows $before -> $after"; else verdict "A37 an application trigger swallows the flush in a failed savepoint" 0 "changed without a log row"; fi
qa -c "DROP TRIGGER zz_swallow ON extracted_documents" >/dev/null
# H2: renaming the extension's schema would switch the guards off.
refused_with "A38 renaming the extension's schema (its guards name it)" 55000 "$(state_of "ALTER SCHEMA public RENAME TO hidden")"
# H3: while the worker marks one session cleaned up, an application trigger marks others.
qa >/dev/null <<'SQL'
CREATE FUNCTION public.mark_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE legacy_import_sessions SET cleaned_up_at = now() WHERE id <> NEW.id AND cleaned_up_at IS NULL AND format('%s', status) = 'Exported';
    RETURN NULL;
END $$;
CREATE TRIGGER zz_mark_all AFTER UPDATE OF cleaned_up_at ON legacy_import_sessions FOR EACH ROW EXECUTE FUNCTION public.mark_all();
SQL
q app -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 's7'" >/dev/null 2>&1
q app -c "SET legacy_backup.skip_snapshot_check = on" -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id IN ('s6', 's7') AND format('%s', status) <> 'Exported'" >/dev/null 2>&1
others=$(q app -c "SELECT string_agg(id, ',') FROM legacy_import_sessions WHERE format('%s', status) = 'Exported' AND cleaned_up_at IS NULL AND id <> 'sz'")
target=$(q app -c "SELECT min(id) FROM legacy_import_sessions WHERE format('%s', status) = 'Exported' AND cleaned_up_at IS NULL")
state=$(q app -c "SELECT public.sqlstate_of(\$q\$SET LOCAL legacy_backup.change_source = cleanup; UPDATE legacy_import_sessions SET cleaned_up_at = now() WHERE id = '$target'\$q\$)")
marked=$(q app -c "SELECT count(*) FROM legacy_import_sessions WHERE cleaned_up_at IS NOT NULL AND id <> '$target' AND id <> 'sz'")
refused_with "A39 an application trigger marks other sessions cleaned up during the worker's mark (others marked: $marked; exported: $others)" LB004 "$state"
qa -c "DROP TRIGGER zz_mark_all ON legacy_import_sessions" >/dev/null
# H4: a CHECK constraint's function changes another document while undo runs: that change is
# the application's, not the undo's.
doc=$(q app -c "SELECT min(id) FROM extracted_documents WHERE session_id = 's7' AND category_id IS NOT NULL")
other=$(q app -c "SELECT max(id) FROM extracted_documents WHERE session_id = 's7' AND category_id IS NOT NULL")
newcat=$(q app -c "SELECT min(c.id) FROM import_categories c, extracted_documents d WHERE d.id = '$doc' AND c.session_id = 's7' AND c.id <> d.category_id")
qa >/dev/null <<SQL
CREATE TABLE public.side_target (doc text, other text);
INSERT INTO public.side_target VALUES ('$doc', '$other');
CREATE FUNCTION public.side_change(doc text) RETURNS boolean LANGUAGE plpgsql SET search_path = public AS \$\$
BEGIN
    IF current_setting('legacy_backup.change_source', true) = 'undo' AND doc = (SELECT t.doc FROM public.side_target t) THEN
        UPDATE extracted_documents SET category_id = NULL, status = 'Uncategorized' WHERE id = (SELECT t.other FROM public.side_target t);
    END IF;
    RETURN true;
END \$\$;
ALTER TABLE extracted_documents ADD CONSTRAINT side_change CHECK (public.side_change(id)) NOT VALID;
SQL
qa -c "SET legacy_backup.actor = 'u-paralegal'" -c "UPDATE extracted_documents SET category_id = '$newcat', status = 'Categorized', categorized_by = 'u-paralegal', categorized_at = now(), updated_at = now() WHERE id = '$doc'" >/dev/null
qa -c "SELECT legacy_undo_last_categorization('u-paralegal', '$doc')" >/dev/null 2>&1 || echo "  (undo refused: $(qa -c "SELECT legacy_undo_last_categorization('u-paralegal', '$doc')" 2>&1 | head -1))"
forged=$(q app -c "SELECT count(*) FROM category_assignment_logs WHERE source = 'undo' AND document_id = '$other'")
undone=$(q app -c "SELECT count(*) FROM category_assignment_logs WHERE source = 'undo' AND document_id = '$doc'")
side=$(q app -c "SELECT count(*) FROM category_assignment_logs WHERE source = 'app' AND document_id = '$other' AND new_status = 'Uncategorized'")
if [ "$undone" -ge 1 ] && [ "$side" -ge 1 ] && [ "$forged" = 0 ]; then verdict "A40 a CHECK constraint's side change during undo recorded as the undo" 1 "side change logged as the application's"
else verdict "A40 a CHECK constraint's side change during undo recorded as the undo" 0 "undo rows $undone, side changes as app $side, as undo $forged"; fi
q app -c "SET legacy_backup.allow_drop = on" -c "ALTER TABLE extracted_documents DROP CONSTRAINT side_change" >/dev/null

echo "13. classes (issue 19)"
# Run last: each attack cleans up after itself, and A48/A49 may destroy a database when they get
# through (A49 uses databases of its own).
# The worker's pid (empty when it is not running), read from database postgres.
worker_pid() { q postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker' ORDER BY pid LIMIT 1"; }
ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
# SQLSTATE of the first error of the given -c statements run as lb_app in database $1 (nothing
# when all succeeded).
lb_error_in() { local db=$1; shift
  "$BIN/psql" -X -q -At -h "$CLUSTER/sock" -p "$PORT" -U lb_app -d "$db" -c '\set VERBOSITY verbose' "$@" 2>&1 \
    | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' | head -1; }

# A41: an operator of the application's in the extension's schema, found by a catalog query the
# worker runs before it pins its search_path (attach::structure_problems, `proname LIKE
# 'legacy\_backup\_%'`, reached through lock_app_tables when a column it checks is missing).
# The LIKE is evaluated only for triggers on the table whose function lives in the extension's
# schema: a (never firing) trigger on users calling a function of the application's there.
qa >/dev/null <<'SQL'
-- (PL/pgSQL: an SQL function would be inlined, and the planner would then call the payload
-- only where the LIKE is true.)
CREATE FUNCTION public.a41_like(name, name) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RETURN public.payload('A41 operator ~~ (name, name)') AND $1::text LIKE $2::text; END $$;
CREATE OPERATOR public.~~ (LEFTARG = name, RIGHTARG = name, FUNCTION = public.a41_like);
CREATE FUNCTION public.a41_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER a41_probe AFTER TRUNCATE ON users FOR EACH STATEMENT EXECUTE FUNCTION public.a41_noop();
SQL
renamed=$(state_of "ALTER TABLE users RENAME COLUMN id TO id_renamed")
sleep 4 # the worker's naptime is 1 s
[ "$renamed" = ok ] && qa -c "ALTER TABLE users RENAME COLUMN id_renamed TO id"
qa -c "DROP OPERATOR public.~~ (name, name)" -c "DROP FUNCTION public.a41_like(name, name)" \
   -c "DROP TRIGGER IF EXISTS a41_probe ON users" -c "DROP FUNCTION public.a41_noop()"
seen=$(escalation)
if [ -z "$seen" ]; then verdict "A41 an operator ~~(name, name) in the extension's schema, run by the worker's catalog query" 1 "users.id rename: $renamed"
else verdict "A41 an operator ~~(name, name) in the extension's schema, run by the worker's catalog query" 0 "users.id rename: $renamed; payload ran as $seen"; fi

# A42: a document moved to another session: its change would be judged against the other
# session's snapshot. Refused with LB008, directly and through a BEFORE trigger of the application.
doc=$(q app -c "SELECT min(id) FROM extracted_documents WHERE session_id = 's1'")
code=$(client_error_of -c "UPDATE extracted_documents SET session_id = 's2' WHERE id = '$doc'")
now=$(q app -c "SELECT session_id FROM extracted_documents WHERE id = '$doc'")
if [ "$code" = LB008 ] && [ "$now" = s1 ]; then verdict "A42 moving a document to another session (UPDATE … SET session_id)" 1 "refused, SQLSTATE LB008"
else verdict "A42 moving a document to another session (UPDATE … SET session_id)" 0 "SQLSTATE ${code:-none}, session_id now $now"; fi
q app -c "UPDATE extracted_documents SET session_id = 's1' WHERE id = '$doc' AND session_id <> 's1'" >/dev/null 2>&1
qa >/dev/null <<SQL
CREATE FUNCTION public.a42_move() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN IF NEW.id = '$doc' THEN NEW.session_id := 's2'; END IF; RETURN NEW; END \$\$;
CREATE TRIGGER zz_a42_move BEFORE UPDATE ON extracted_documents FOR EACH ROW EXECUTE FUNCTION public.a42_move();
SQL
code=$(client_error_of -c "UPDATE extracted_documents SET email_subject = email_subject WHERE id = '$doc'")
now=$(q app -c "SELECT session_id FROM extracted_documents WHERE id = '$doc'")
if [ "$code" = LB008 ] && [ "$now" = s1 ]; then verdict "A42t a BEFORE trigger moves a document to another session on an unrelated UPDATE" 1 "refused, SQLSTATE LB008"
else verdict "A42t a BEFORE trigger moves a document to another session on an unrelated UPDATE" 0 "SQLSTATE ${code:-none}, session_id now $now"; fi
qa -c "DROP TRIGGER zz_a42_move ON extracted_documents" -c "DROP FUNCTION public.a42_move()"
q app -c "UPDATE extracted_documents SET session_id = 's1' WHERE id = '$doc' AND session_id <> 's1'" >/dev/null 2>&1

# A43: row-level security forced on the owner hides rows from the snapshot, which is read as
# the owner: the snapshot must fail (expected 42501, row_security off), not leave rows out.
before=$(q app -c "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 's1'")
total=$(q app -c "SELECT count(*) FROM extracted_documents WHERE session_id = 's1'")
# Since 0.5.0 enabling row-level security on an application table is refused (LB006); the
# snapshot then holds every row. (tests/security/traps plants it anyway, as a superuser, and
# checks every privileged read refuses.)
enabled=$(state_of "ALTER TABLE extracted_documents ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")
qa -c "CREATE POLICY a43_hide ON extracted_documents USING (format('%s', status) <> 'Categorized')" >/dev/null
took=$(state_of "SELECT legacy_snapshot_take('s1')")
read=$(state_of "SELECT legacy_snapshot('s1')")
after=$(q app -c "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 's1'")
held=$(q app -c "SELECT stats->>'totalDocuments' FROM legacy_backup.snapshots WHERE session_id = 's1' ORDER BY created_at DESC, snapshot_at DESC LIMIT 1")
qa -c "DROP POLICY a43_hide ON extracted_documents" -c "ALTER TABLE extracted_documents NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY" >/dev/null 2>&1
if { [ "$took" != ok ] && [ "$read" != ok ] && [ "$after" = "$before" ]; } \
   || { [ "$enabled" = LB006 ] && [ "$took" = ok ] && [ "$held" = "$total" ]; }; then
  verdict "A43 row-level security hides documents from a snapshot" 1 "enabling it: $enabled; legacy_snapshot_take: $took (holds ${held:-?} of $total), legacy_snapshot: $read"
else verdict "A43 row-level security hides documents from a snapshot" 0 "enabling it: $enabled; legacy_snapshot_take: $took, legacy_snapshot: $read, snapshots $before -> $after, newest holds $held of $total documents"; fi

# A44: casts of the application's enum that lie: the snapshot must hold the true statuses.
truth=$(q app -c "SELECT count(*) FILTER (WHERE format('%s', status) = 'Categorized') FROM extracted_documents WHERE session_id = 's1'")
qa >/dev/null <<'SQL'
CREATE FUNCTION public.a44_lie(s "DocumentCategorizationStatus") RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.payload('A44 lying cast to text'); RETURN 'Uncategorized'; END $$;
CREATE CAST ("DocumentCategorizationStatus" AS text) WITH FUNCTION public.a44_lie("DocumentCategorizationStatus") AS IMPLICIT;
CREATE FUNCTION public.a44_lie_json(s "DocumentCategorizationStatus") RETURNS json LANGUAGE plpgsql AS $$
BEGIN PERFORM public.payload('A44 lying cast to json'); RETURN '"Uncategorized"'::json; END $$;
CREATE CAST ("DocumentCategorizationStatus" AS json) WITH FUNCTION public.a44_lie_json("DocumentCategorizationStatus");
CREATE FUNCTION public.a44_lie_jsonb(s "DocumentCategorizationStatus") RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM public.payload('A44 lying cast to jsonb'); RETURN '"Uncategorized"'::jsonb; END $$;
CREATE CAST ("DocumentCategorizationStatus" AS jsonb) WITH FUNCTION public.a44_lie_jsonb("DocumentCategorizationStatus");
SQL
IFS='|' read -r sid44 stat44 < <(qa -c "SELECT r->>'snapshotId', r->'stats'->>'categorizedCount' FROM (SELECT legacy_snapshot_take('s1') AS r) t" 2>/dev/null)
IFS='|' read -r stored44 body44 < <(q app -c "SELECT stats->>'categorizedCount', (SELECT count(*) FROM json_array_elements(convert_from(s.body, 'UTF8')::json->'documents') d WHERE d->>'status' = 'Categorized')
                                             FROM legacy_backup.snapshots s WHERE s.id = '${sid44:-none}'")
qa -c "DROP CAST (\"DocumentCategorizationStatus\" AS text)" -c "DROP CAST (\"DocumentCategorizationStatus\" AS json)" \
   -c "DROP CAST (\"DocumentCategorizationStatus\" AS jsonb)" \
   -c "DROP FUNCTION public.a44_lie(\"DocumentCategorizationStatus\"), public.a44_lie_json(\"DocumentCategorizationStatus\"), public.a44_lie_jsonb(\"DocumentCategorizationStatus\")"
seen=$(escalation)
if [ -n "$sid44" ] && [ "$stat44" = "$truth" ] && [ "$stored44" = "$truth" ] && [ "$body44" = "$truth" ] && [ -z "$seen" ]; then
  verdict "A44 casts of the document status enum that lie, read by a snapshot" 1 "categorized: $truth"
else verdict "A44 casts of the document status enum that lie, read by a snapshot" 0 "categorized: true $truth, returned stats ${stat44:-none}, stored stats ${stored44:-none}, documents in body ${body44:-none}${seen:+; payload ran as $seen}"; fi

# A45: a category renamed or merged after the snapshot: the snapshot no longer holds the
# session's categorization (SNAPSHOT_OUTDATED, export refused with LB003).
a45() { # name sid change
  qa -v sid="$2" -v docs=10 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
  qa -c "SELECT legacy_snapshot_take('$2')" >/dev/null
  local pre code ready st status
  pre=$(qa -c "SELECT legacy_export_readiness('$2')->>'code'")
  qa -c "$3" >/dev/null
  code=$(qa -c "SELECT legacy_export_readiness('$2')->>'code'")
  ready=$(qa -c "SELECT legacy_export_readiness('$2')->>'ready'")
  st=$(client_error_of -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = '$2'")
  status=$(q app -c "SELECT format('%s', status) FROM legacy_import_sessions WHERE id = '$2'")
  if [ "$pre" = READY ] && [ "$code" = SNAPSHOT_OUTDATED ] && [ "$ready" = false ] && [ "$st" = LB003 ] && [ "$status" != Exported ]; then
    verdict "$1" 1 "SNAPSHOT_OUTDATED, refused with LB003"
  else verdict "$1" 0 "readiness before the change $pre, after $code (ready $ready); export: SQLSTATE ${st:-none}, status now $status"; fi
  q app -c "UPDATE legacy_import_sessions SET status = 'Completed', updated_at = now() WHERE id = '$2' AND format('%s', status) = 'Exported'" >/dev/null 2>&1
}
a45 "A45 a category renamed after the snapshot" c45 "UPDATE import_categories SET name = name || ' x', updated_at = now() WHERE id = 'c45-cat-001'"
a45 "A45m a category merged into another after the snapshot" c45m "UPDATE import_categories SET merged_into = 'c45m-cat-002', updated_at = now() WHERE id = 'c45m-cat-003'"

# A46: a statement that outlasts cleanup_delay between snapshot and export: the grace period
# must count from COMMIT, not from the start of the statement.
qa -v sid=c46 -v docs=5 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
mkdir -p "$BUCKET_DIR/pst/c46" "$BUCKET_DIR/documents/c46"
echo pst >"$BUCKET_DIR/pst/c46/archive.pst"; echo doc >"$BUCKET_DIR/documents/c46/a.pdf"
q postgres -c "ALTER SYSTEM SET legacy_backup.cleanup_delay = '6s'" -c "SELECT pg_reload_conf()" >/dev/null
poll "SHOW legacy_backup.cleanup_delay" 6s 10 >/dev/null
out=$(qa -c "DO \$\$ BEGIN
    PERFORM legacy_snapshot_take('c46');
    PERFORM pg_sleep(7);
    UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 'c46';
END \$\$" 2>&1); rc=$?
committed=$(ms_now)
gone_after=
while [ $(( $(ms_now) - committed )) -lt 26000 ]; do
  if [ "$(find "$BUCKET_DIR/pst/c46" -type f 2>/dev/null | wc -l)" = 0 ]; then gone_after=$(( $(ms_now) - committed )); break; fi
  sleep 0.2
done
q postgres -c "ALTER SYSTEM RESET legacy_backup.cleanup_delay" -c "SELECT pg_reload_conf()" >/dev/null
if [ "$rc" = 0 ] && [ -n "$gone_after" ] && [ "$gone_after" -ge 4000 ]; then
  verdict "A46 a long statement shortens the grace period (cleanup_delay 6s, 7 s between snapshot and export)" 1 "pst/c46 deleted $gone_after ms after commit"
else verdict "A46 a long statement shortens the grace period (cleanup_delay 6s, 7 s between snapshot and export)" 0 \
  "$( [ "$rc" = 0 ] || echo "export statement failed: $out; ")pst/c46 $( [ -n "$gone_after" ] && echo "deleted $gone_after ms after commit" || echo "still there 26 s after commit")"; fi

# A47: an application trigger that sleeps in the worker's SNAPSHOT_UPLOADED row stalls every
# upload. Fixed: application code runs under legacy_backup.job_timeout (2s here), other jobs
# go on, health names the snapshot late beyond legacy_backup.max_upload_lag (5s here), and the
# worker answers pg_terminate_backend while it sleeps.
qa >/dev/null <<'SQL'
CREATE TABLE public.a47_release (released boolean);
CREATE FUNCTION public.a47_stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- pg_sleep(300), in steps, so the suite can release it afterwards.
    FOR i IN 1..300 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM public.a47_release);
        PERFORM pg_catalog.pg_sleep(1);
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER a47_stall AFTER INSERT ON legacy_import_audit_logs FOR EACH ROW
    WHEN (NEW.action = 'SNAPSHOT_UPLOADED' AND NEW.session_id = 's1') EXECUTE FUNCTION public.a47_stall();
SQL
s1id=$(qa -c "SELECT legacy_snapshot_take('s1')->>'snapshotId'")
s2id=$(qa -c "SELECT legacy_snapshot_take('s2')->>'snapshotId'")
s1key=$(q app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$s1id'")
start=$(ms_now); s2_at=; job_at=; health_at=; job=
while [ $(( $(ms_now) - start )) -lt 20000 ]; do
  [ -z "$s2_at" ] && [ "$(q app -c "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$s2id'")" = uploaded ] && s2_at=$(( $(ms_now) - start ))
  job=$(q app -c "SELECT state || ': ' || coalesce(last_error, '') FROM legacy_backup.jobs WHERE kind = 'upload' AND snapshot_id = '$s1id' ORDER BY id DESC LIMIT 1" | tr '\n' ' ')
  [ -z "$job_at" ] && echo "$job" | grep -Eiq '^(retrying|failed): .*(timeout|timed out|cancel)' && job_at=$(( $(ms_now) - start ))
  [ -z "$health_at" ] && [ "$(q app -c "SELECT count(*) FILTER (WHERE NOT ok) > 0 AND count(*) FILTER (WHERE NOT ok AND (strpos(detail, '$s1id') > 0 OR strpos(detail, '$s1key') > 0)) > 0 FROM legacy_backup_health()")" = t ] \
    && health_at=$(( $(ms_now) - start ))
  [ -n "$s2_at" ] && [ -n "$job_at" ] && [ -n "$health_at" ] && break
  sleep 0.5
done
wpid=$(worker_pid); slept=
for _ in $(seq 1 100); do
  [ -n "$wpid" ] && [ "$(q postgres -c "SELECT wait_event FROM pg_stat_activity WHERE pid = $wpid")" = PgSleep ] && { slept=1; break; }
  sleep 0.2; wpid=$(worker_pid)
done
terminated=
if [ -n "$wpid" ]; then
  q postgres -c "SELECT pg_terminate_backend($wpid)" >/dev/null
  for _ in $(seq 1 25); do [ "$(q postgres -c "SELECT count(*) FROM pg_stat_activity WHERE pid = $wpid")" = 0 ] && { terminated=1; break; }; sleep 0.2; done
fi
if [ -n "$s2_at" ] && [ -n "$job_at" ] && [ -n "$health_at" ] && [ "$health_at" -le 15000 ] && [ -n "$terminated" ]; then
  verdict "A47 an application trigger stalls the worker (sleeps in its SNAPSHOT_UPLOADED row)" 1 "s2 uploaded after $s2_at ms; s1 job [$job]; health after $health_at ms; terminated"
else verdict "A47 an application trigger stalls the worker (sleeps in its SNAPSHOT_UPLOADED row)" 0 \
  "s2 uploaded: ${s2_at:-no (20 s)}; s1 job [$job]; health naming s1's snapshot: ${health_at:-no (20 s)}; worker ${wpid:-none} $( [ -n "$slept" ] && echo "sleeping in the trigger" || echo "not seen sleeping"), pg_terminate_backend: $( [ -n "$terminated" ] && echo "gone" || echo "still there after 5 s")"; fi
qa -c "INSERT INTO public.a47_release VALUES (true)" >/dev/null
for _ in $(seq 1 30); do qa -c "SET lock_timeout = '2s'" -c "DROP TRIGGER a47_stall ON legacy_import_audit_logs" >/dev/null 2>&1 && break; sleep 0.5; done
qa -c "DROP FUNCTION public.a47_stall()" -c "DROP TABLE public.a47_release" >/dev/null 2>&1
# (The s1 job may be waiting out a long retry delay: due now.)
q app -c "UPDATE legacy_backup.jobs SET next_attempt_at = now() WHERE snapshot_id = '$s1id' AND state = 'retrying'" >/dev/null 2>&1
if ! poll "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 20 >/dev/null; then
  # (A worker that stopped on SIGTERM with exit code 0 is not restarted: restart the cluster.)
  echo "  (the worker did not come back: restarting the cluster)"
  runuser -u postgres -- "$BIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/server.log" -m fast -w restart >/dev/null
  poll "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 20 >/dev/null
fi
poll "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$s1id'" uploaded 30 >/dev/null

# A50-A53: an independent attacker's read of 0.5.0. The planner folds an IMMUTABLE function of a
# constant in a CHECK constraint when constraint_exclusion = on (any role may SET it, the
# database's owner may ALTER DATABASE … SET it for the worker) and in everything of an inheriting
# child table; a child table also hides its rows' changes; row security without FORCE stops the
# worker, which reads as its own role.
qa >/dev/null <<'SQL'
CREATE FUNCTION public.fold50(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.payload('A50 a CHECK constraint folded by the planner'); RETURN t; END $$;
ALTER TABLE legacy_import_sessions ADD CONSTRAINT a50_check CHECK (id <> public.fold50('zz'));
ALTER TABLE users ADD CONSTRAINT a50_check CHECK (id <> public.fold50('zz'));
SQL
reset_witness
qa -c "SET constraint_exclusion = on" -c "SELECT legacy_export_readiness('s1')" -c "SELECT legacy_snapshot_take('s3', 'u-partner')" >/dev/null 2>&1
no_escalation "A50 a CHECK constraint folded under constraint_exclusion = on (readiness, snapshot as the extension's owner)"
wpid=$(q app -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'")
qa -c "ALTER DATABASE app SET constraint_exclusion = on" >/dev/null
q app -c "SELECT pg_terminate_backend($wpid)" >/dev/null   # the next worker connects with the database's settings
poll "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker' AND pid <> $wpid" 1 20 >/dev/null
id=$(qa -c "SELECT legacy_snapshot_take('s3')->>'snapshotId'")
poll "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id'" uploaded 20 >/dev/null
sleep 2
qa -c "ALTER DATABASE app RESET constraint_exclusion" -c "ALTER TABLE legacy_import_sessions DROP CONSTRAINT a50_check" \
   -c "ALTER TABLE users DROP CONSTRAINT a50_check" >/dev/null
no_escalation "A50w the same through ALTER DATABASE … SET constraint_exclusion = on, in the worker"
refused_with "A51 a child table of users (a read of users plans its indexes and constraints with the reader's rights)" LB006 \
  "$(state_of "CREATE TABLE public.a51_child () INHERITS (users)")"
qa -c "DROP TABLE IF EXISTS public.a51_child" >/dev/null 2>&1
refused_with "A52 a child table of import_categories (its categories' changes are not logged)" LB006 \
  "$(state_of "CREATE TABLE public.a52_child () INHERITS (import_categories)")"
qa -c "DROP TABLE IF EXISTS public.a52_child" >/dev/null 2>&1
refused_with "A53 row-level security without FORCE on legacy_import_sessions (the worker reads it as its own role)" LB006 \
  "$(state_of "ALTER TABLE legacy_import_sessions ENABLE ROW LEVEL SECURITY")"
qa -c "ALTER TABLE legacy_import_sessions DISABLE ROW LEVEL SECURITY" >/dev/null 2>&1
qa -c "DROP FUNCTION public.fold50(text)" >/dev/null 2>&1

# A48: an application trigger that raises in the worker's SNAPSHOT_UPLOADED row must not crash
# the worker: while it is down nobody holds database app open, and its owner could drop it.
poll "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 20 >/dev/null
pid0=$(worker_pid)
qa >/dev/null <<'SQL'
CREATE FUNCTION public.a48_raise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'A48: the application refuses this audit row'; END $$;
CREATE TRIGGER a48_raise AFTER INSERT ON legacy_import_audit_logs FOR EACH ROW
    WHEN (NEW.action = 'SNAPSHOT_UPLOADED' AND NEW.session_id = 's1') EXECUTE FUNCTION public.a48_raise();
SQL
s1id=$(qa -c "SELECT legacy_snapshot_take('s1')->>'snapshotId'")
s2id=$(qa -c "SELECT legacy_snapshot_take('s2')->>'snapshotId'")
drop_app() { # -> "code code" of DROP DATABASE app and DROP DATABASE app WITH (FORCE) as lb_app ('ok' when it went through)
  local a b
  a=$(lb_error_in postgres -c "DROP DATABASE app"); a=${a:-ok}
  b=ok; [ "$a" = ok ] || { b=$(lb_error_in postgres -c "DROP DATABASE app WITH (FORCE)"); b=${b:-ok}; }
  echo "$a $b"
}
app_exists() { q postgres -c "SELECT count(*) FROM pg_database WHERE datname = 'app'"; }
pids="$pid0"; drops=; job_seen=; s2_up=; start=$(ms_now)
while [ $(( $(ms_now) - start )) -lt 25000 ]; do
  w=$(worker_pid)
  [ "${w:-down}" != "${pids##* }" ] && pids="$pids ${w:-down}"
  # While the worker is down, its database is open to DROP DATABASE by its owner.
  [ -z "$w" ] && [ -z "$drops" ] && drops="while the worker was down: $(drop_app)"
  [ "$(app_exists)" = 1 ] || break
  [ "$(q app -c "SELECT count(*) FROM legacy_backup.jobs WHERE kind = 'upload' AND snapshot_id = '$s1id' AND attempts >= 1 AND last_error IS NOT NULL")" -ge 1 ] 2>/dev/null && job_seen=1
  [ "$(q app -c "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$s2id'")" = uploaded ] && s2_up=1
  [ -n "$job_seen" ] && [ -n "$s2_up" ] && break
  sleep 0.2
done
[ "$(app_exists)" = 1 ] && drops="${drops:+$drops; }$(drop_app)"
exists=$(app_exists)
if [ "$pids" = "$pid0" ] && [ -n "$job_seen" ] && [ -n "$s2_up" ] && [ "$exists" = 1 ] && ! echo "$drops" | grep -qw ok; then
  verdict "A48 an application trigger crashes the worker, then DROP DATABASE app by its owner" 1 "worker $pid0 kept; DROP DATABASE, WITH (FORCE): $drops"
else verdict "A48 an application trigger crashes the worker, then DROP DATABASE app by its owner" 0 \
  "worker pids: $pids; s1 job failed with last_error: ${job_seen:-no}; s2 uploaded: ${s2_up:-no}; DROP DATABASE, WITH (FORCE): $drops; app $( [ "$exists" = 1 ] && echo exists || echo DROPPED)"; fi
if [ "$(app_exists)" = 1 ]; then
  qa -c "DROP TRIGGER a48_raise ON legacy_import_audit_logs" -c "DROP FUNCTION public.a48_raise()" >/dev/null 2>&1
fi

# A49: the database's owner takes the schema that holds the extension, then DROP OWNED drops it
# with the extension's data. Each variant runs in a database of its own (it may destroy it).
a49_db() { # db sid: owned by lb_app, the application's tables, the extension, one snapshot
  q postgres -c "CREATE DATABASE $1 OWNER lb_app" >/dev/null
  "$BIN/psql" -X -q -h "$CLUSTER/sock" -p "$PORT" -U lb_app -d "$1" -v ON_ERROR_STOP=1 \
    -f "$ROOT/tests/fixtures/app_schema.sql" -v sid="$2" -v docs=5 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
  q "$1" -c "CREATE EXTENSION legacy_backup" >/dev/null 2>&1
  "$BIN/psql" -X -q -h "$CLUSTER/sock" -p "$PORT" -U lb_app -d "$1" -c "SELECT legacy_snapshot_take('$2')" >/dev/null 2>&1
}
a49() { # name db sid take-schema-statement drop-statement
  a49_db "$2" "$3"
  local before took dropped ext after
  before=$(q "$2" -c "SELECT count(*) FROM legacy_backup.snapshots" 2>/dev/null)
  took=$(lb_error_in "$2" -c "$4"); took=${took:-ok}
  dropped=skipped; [ "$took" = ok ] && { dropped=$(lb_error_in "$2" -c "$5"); dropped=${dropped:-ok}; }
  ext=$(q "$2" -c "SELECT count(*) FROM pg_extension WHERE extname = 'legacy_backup'" 2>/dev/null)
  after=$(q "$2" -c "SELECT count(*) FROM legacy_backup.snapshots" 2>/dev/null || echo gone)
  if [ "$before" = 1 ] && { [ "$took" != ok ] || [ "$dropped" != ok ]; } && [ "$ext" = 1 ] && [ "$after" = "$before" ]; then
    verdict "$1" 1 "taking the schema: $took, dropping: $dropped"
  else verdict "$1" 0 "taking the schema: $took, dropping: $dropped; extension installed: ${ext:-?}, snapshots $before -> $after"; fi
  q postgres -c "DROP DATABASE IF EXISTS $2" >/dev/null 2>&1
}
a49 "A49 ALTER SCHEMA public OWNER TO lb_app, then DROP OWNED BY lb_app CASCADE" a49 o49 \
  "ALTER SCHEMA public OWNER TO lb_app" "DROP OWNED BY lb_app CASCADE"
a49 "A49c the same with DROP OWNED BY CURRENT_USER CASCADE" a49c o49c \
  "ALTER SCHEMA public OWNER TO CURRENT_USER" "DROP OWNED BY CURRENT_USER CASCADE"

echo "14. a holder of the bucket's credentials (0.6.0: sealed, verified, scrubbed backups)"
# The attacker holds only the bucket's access key and secret: no database role, not the sealing
# key (LEGACY_BACKUP_KEY, in the server's credentials file). Every move below goes through the S3
# API with those credentials (curl's SigV4), as that attacker's would; the database is read only
# to pick the targets and to judge. What must hold: the objects tell nothing, a forged, swapped,
# replayed or damaged object is never opened (LB010), and the scrub notices a forged or deleted
# one (R2_BACKUP_DAMAGED) and puts the database's copy back (R2_BACKUP_REPAIRED).
poll "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 20 >/dev/null
printf 'LEGACY_BACKUP_KEY=%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$CREDENTIALS"
q postgres -c "SELECT pg_reload_conf()" >/dev/null
poll "SELECT ok FROM legacy_backup_health() WHERE check_name = 'backup sealing key'" t 10 >/dev/null
sleep 2 # the worker reloads its settings on SIGHUP, between two naptimes
S3_URL="http://127.0.0.1:$S3_PORT/legacy-import"
bucket() { # method key [curl args...]: one request of the attacker's; fails unless S3 answers 2xx
  local m=$1 k=$2; shift 2
  curl -sS -f -X "$m" --aws-sigv4 "aws:amz:auto:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@" "$S3_URL/$k" 2>/dev/null
}
bucket_get() { bucket GET "$1" -o "$2"; }           # key file
bucket_put() { bucket PUT "$1" -T "$2" -o /dev/null; } # key file
bucket_delete() { bucket DELETE "$1" -o /dev/null; }  # key
BK=$CLUSTER/bucket-attacks; rm -rf "$BK"; mkdir -p "$BK"
# SQLSTATE of legacy_snapshot_fetch(key), or of legacy_snapshot_fetch_unverified(key, actor), run
# by a superuser (the partner's DBA): 'ok' when the object was opened.
fetch_state() { # key [actor]
  if [ -n "${2:-}" ]; then q app -c "SELECT public.sqlstate_of(\$q\$SELECT legacy_snapshot_fetch_unverified('$1', '$2')\$q\$)"
  else q app -c "SELECT public.sqlstate_of(\$q\$SELECT legacy_snapshot_fetch('$1')\$q\$)"; fi
}
# 't' when snapshot $1's object opens and holds exactly the bytes the database recorded.
opens() { q app -c "SELECT encode(sha256(convert_to(legacy_snapshot_fetch(s.snapshot_key)::text, 'UTF8')), 'hex') = s.sha256
                    FROM legacy_backup.snapshots s WHERE s.id = '$1'" 2>/dev/null; }
key_of() { q app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$1'"; }
qa -v sid=b1 -v docs=30 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
qa -v sid=b2 -v docs=30 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1
# Session b1: x1 (left alone), x2, x3, x4, x5; session b2: y1, y2. Each attack has its own target.
for v in x1 x2 x3 x4 x5; do printf -v "$v" '%s' "$(qa -c "SELECT legacy_snapshot_take('b1')->>'snapshotId'")"; done
for v in y1 y2; do printf -v "$v" '%s' "$(qa -c "SELECT legacy_snapshot_take('b2')->>'snapshotId'")"; done
all="'$x1','$x2','$x3','$x4','$x5','$y1','$y2'"
poll "SELECT count(*) FROM legacy_backup.snapshots WHERE id IN ($all) AND upload_state = 'uploaded'" 7 30 >/dev/null
sealed=$(q app -c "SELECT count(*) FROM legacy_backup.snapshots WHERE id IN ($all) AND sealed_key_id IS NOT NULL")
# Before any attack every target opens: a refusal below is the attack's doing, not a key or a
# server that refuses everything.
before=0; for id in $x1 $x2 $x3 $x4 $x5 $y1 $y2; do [ "$(opens "$id")" = t ] && before=$((before + 1)); done

# A54: read. The attacker downloads every object of the two sessions: none may hold the session's
# content in clear. The needles (file names, e-mail subjects, category names, the PST's name and
# the key "formatVersion", as the snapshot's JSON writes them) are taken from the database's plain
# bodies, and must all be found there, so the search is known to find what it looks for.
got=0; args=()
for id in $x1 $x2 $x3 $x4 $x5 $y1 $y2; do
  q app -c "SELECT encode(body, 'base64') FROM legacy_backup.snapshots WHERE id = '$id'" | base64 -d >"$BK/$id.plain"
  bucket_get "$(key_of "$id")" "$BK/$id.object" && [ -s "$BK/$id.object" ] && got=$((got + 1))
  args+=("$BK/$id.plain" "$BK/$id.object")
done
read -r needles in_plain in_objects example < <(python3 - "${args[@]}" <<'PY'
import json, sys
enc = lambda s: json.dumps(s, ensure_ascii=False)[1:-1].encode()
pairs = list(zip(sys.argv[1::2], sys.argv[2::2]))
needles, plain_found, object_found, example = 0, 0, 0, "-"
for plain_path, object_path in pairs:
    plain = open(plain_path, 'rb').read()
    try: obj = open(object_path, 'rb').read()
    except OSError: obj = b''
    d = json.loads(plain)
    strings = {enc(d['pstFileName']), b'"formatVersion"'}
    strings |= {enc(x[k]) for x in d['documents'] for k in ('fileName', 'emailSubject') if x.get(k)}
    strings |= {enc(c['name']) for c in d['categories']}
    strings = {s for s in strings if len(s) >= 6}
    needles += len(strings)
    plain_found += sum(s in plain for s in strings)
    hits = [s for s in strings if s in obj]
    object_found += len(hits)
    if hits and example == "-": example = hits[0].decode(errors='replace').replace(' ', '_')
print(needles, plain_found, object_found, example)
PY
)
if [ "$got" = 7 ] && [ "${needles:-0}" -gt 0 ] && [ "$in_plain" = "$needles" ] && [ "$in_objects" = 0 ]; then
  verdict "A54 reading the session's content from its objects in the bucket" 1 "7 objects, $sealed sealed; none of $needles needles found"
else verdict "A54 reading the session's content from its objects in the bucket" 0 \
  "objects downloaded: $got of 7, sealed: $sealed; needles: ${needles:-?}, found in the plain bodies: ${in_plain:-?}, in the objects: ${in_objects:-?} (e.g. $example)"; fi

# A55: overwrite. A well-formed snapshot document, in plain (the attacker has no key): x4's own
# content with every document uncategorized, put in place of x4's object. Fetching must refuse it
# (LB010), and so must the partner's override, which admits only plain files the database has no
# record of (the database records a sealed object under that key), and writes no
# SNAPSHOT_FETCHED_UNVERIFIED row. (The scrub's part is A55s below.)
k4=$(key_of "$x4")
python3 - "$BK/$x4.plain" "$BK/forged.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1], encoding='utf-8'))
for doc in d['documents']:
    doc.update(categoryId=None, categoryName=None, status='Uncategorized', categorizedBy=None, categorizedAt=None)
n = len(d['documents'])
for k, v in (('categorizedCount', 0), ('skippedCount', 0), ('uncategorizedCount', n), ('categorized', 0), ('skipped', 0), ('uncategorized', n)):
    if k in d.get('stats', {}): d['stats'][k] = v
open(sys.argv[2], 'w', encoding='utf-8').write(json.dumps(d, ensure_ascii=False, separators=(',', ':')))
PY
bucket_put "$k4" "$BK/forged.json" && put4=put || put4="PUT failed"
st=$(fetch_state "$k4")
if [ "$before" = 7 ] && [ "$put4" = put ] && [ "$st" = LB010 ]; then
  verdict "A55 a forged plain snapshot document put in place of a sealed object, fetched" 1 "refused, SQLSTATE LB010"
else verdict "A55 a forged plain snapshot document put in place of a sealed object, fetched" 0 "targets opening before: $before of 7; $put4; fetch: SQLSTATE $st, expected LB010"; fi
st=$(fetch_state "$k4" u-partner)
admitted=$(q app -c "SELECT count(*) FROM legacy_import_audit_logs WHERE action = 'SNAPSHOT_FETCHED_UNVERIFIED' AND details->>'snapshotKey' = '$k4'")
if [ "$put4" = put ] && [ "$st" = LB010 ] && [ "$admitted" = 0 ]; then
  verdict "A55u the same forged document through the partner's override (legacy_snapshot_fetch_unverified)" 1 "refused, SQLSTATE LB010"
else verdict "A55u the same forged document through the partner's override (legacy_snapshot_fetch_unverified)" 0 "$put4; SQLSTATE $st, expected LB010; SNAPSHOT_FETCHED_UNVERIFIED rows: $admitted"; fi

# A57: swap. Two sessions' objects exchanged (b1's x5 and b2's y1), each a genuine sealed object:
# neither may open under the other's key (the seal names the key, the session and the snapshot).
k5=$(key_of "$x5"); ky1=$(key_of "$y1")
swapped=ok
bucket_put "$k5" "$BK/$y1.object" || swapped="PUT failed"
bucket_put "$ky1" "$BK/$x5.object" || swapped="PUT failed"
s5=$(fetch_state "$k5"); sy1=$(fetch_state "$ky1")
if [ "$before" = 7 ] && [ "$swapped" = ok ] && [ "$s5" = LB010 ] && [ "$sy1" = LB010 ]; then
  verdict "A57 two sessions' sealed objects swapped in the bucket, fetched" 1 "both refused, SQLSTATE LB010"
else verdict "A57 two sessions' sealed objects swapped in the bucket, fetched" 0 "targets opening before: $before of 7; swap: $swapped; SQLSTATE b1's $s5, b2's $sy1, expected LB010"; fi

# A58: replay. The session's oldest genuine object (x1) put under a newer key (x3's): it would
# roll the session's backup back to an older categorization.
k3=$(key_of "$x3")
bucket_put "$k3" "$BK/$x1.object" && put3=put || put3="PUT failed"
st=$(fetch_state "$k3")
# The same bytes still open under their own key (x1 is left alone): the refusal is the key's.
control=$(opens "$x1")
if [ "$before" = 7 ] && [ "$put3" = put ] && [ "$st" = LB010 ] && [ "$control" = t ]; then
  verdict "A58 an old object of the same session replayed under a newer key, fetched" 1 "refused, SQLSTATE LB010; it still opens under its own key"
else verdict "A58 an old object of the same session replayed under a newer key, fetched" 0 \
  "targets opening before: $before of 7; $put3; SQLSTATE $st, expected LB010; under its own key it opens: ${control:-no}"; fi

# A59: one byte flipped in the middle of x2's object (its ciphertext).
k2=$(key_of "$x2")
python3 -c "import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) // 2] ^= 1; open(sys.argv[2], 'wb').write(bytes(b))" \
  "$BK/$x2.object" "$BK/flipped"
bucket_put "$k2" "$BK/flipped" && put2=put || put2="PUT failed"
st=$(fetch_state "$k2")
if [ "$before" = 7 ] && [ "$put2" = put ] && ! cmp -s "$BK/flipped" "$BK/$x2.object" && [ "$st" = LB010 ]; then
  verdict "A59 one byte of a sealed object flipped, fetched" 1 "refused, SQLSTATE LB010"
else verdict "A59 one byte of a sealed object flipped, fetched" 0 "targets opening before: $before of 7; $put2; SQLSTATE $st, expected LB010"; fi

# A56: delete. b2's y2 deleted by hand: the scrub must notice it gone and put it back (judged
# below, once the scrub ran).
ky2=$(key_of "$y2")
bucket_delete "$ky2" && ! bucket_get "$ky2" "$BK/deleted" && deleted=deleted || deleted="still there"

# The scrub, every second: each damaged object must be noticed (an R2_BACKUP_DAMAGED row written by
# the worker) and put back from the database's body, sealed (R2_BACKUP_REPAIRED), so that it opens
# again with the bytes the database recorded.
q postgres -c "ALTER SYSTEM SET legacy_backup.scrub_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
poll "SELECT count(*) FROM legacy_backup.snapshots WHERE id IN ('$x2','$x3','$x4','$x5','$y1','$y2') AND verify_result = 'repaired'" 6 60 >/dev/null
q postgres -c "ALTER SYSTEM RESET legacy_backup.scrub_interval" -c "SELECT pg_reload_conf()" >/dev/null
scrubbed() { # id -> "damaged repaired opens sealed": 'damaged' when the worker wrote an R2_BACKUP_DAMAGED
  # row for its key, 'repaired' for an R2_BACKUP_REPAIRED row, 't' when it opens with the recorded
  # bytes, 'sealed' when the object in the bucket is an envelope again
  local k sealed_again=plain; k=$(key_of "$1")
  bucket_get "$k" "$BK/$1.after" && [ "$(head -c 6 "$BK/$1.after")" = LBSEAL ] && sealed_again=sealed
  q app -F' ' -c "SELECT CASE WHEN count(*) FILTER (WHERE action = 'R2_BACKUP_DAMAGED' AND user_id = 'legacy_backup:worker') > 0 THEN 'damaged' ELSE 'not-noticed' END,
                         CASE WHEN count(*) FILTER (WHERE action = 'R2_BACKUP_REPAIRED') > 0 THEN 'repaired' ELSE 'not-repaired' END
                  FROM legacy_import_audit_logs WHERE details->>'snapshotKey' = '$k'" | tr '\n' ' '
  echo "$(opens "$1" || true) $sealed_again"
}
# A55s: the forged x4 noticed and put back.
s=$(scrubbed "$x4")
if [ "$put4" = put ] && [ "$s" = "damaged repaired t sealed" ]; then
  verdict "A55s the forged object left in the bucket (the scrub must notice and repair it)" 1 "R2_BACKUP_DAMAGED, R2_BACKUP_REPAIRED, opens again"
else verdict "A55s the forged object left in the bucket (the scrub must notice and repair it)" 0 \
  "$put4; [damage noticed by the worker, repaired, opens, sealed] = [$s], expected [damaged repaired t sealed]"; fi
# A56 (continued): the deleted y2.
s=$(scrubbed "$y2"); state=$(q app -c "SELECT details->>'state' FROM legacy_import_audit_logs WHERE action = 'R2_BACKUP_DAMAGED' AND details->>'snapshotKey' = '$ky2' LIMIT 1")
if [ "$deleted" = deleted ] && [ "$s" = "damaged repaired t sealed" ] && [ "$state" = missing ]; then
  verdict "A56 an object deleted by hand (the scrub must notice and put it back)" 1 "R2_BACKUP_DAMAGED (missing), R2_BACKUP_REPAIRED, opens again"
else verdict "A56 an object deleted by hand (the scrub must notice and put it back)" 0 \
  "delete: $deleted; [damage noticed by the worker, repaired, opens, sealed] = [$s], expected [damaged repaired t sealed]; damage state: ${state:-none}"; fi
# A59s: the swapped (A57), replayed (A58) and flipped (A59) objects, left in the bucket, put back
# likewise.
bad=
for id in $x5 $y1 $x3 $x2; do s=$(scrubbed "$id"); [ "$s" = "damaged repaired t sealed" ] || bad="$bad $(key_of "$id"): [$s]"; done
if [ "$swapped" = ok ] && [ "$put3" = put ] && [ "$put2" = put ] && [ -z "$bad" ]; then
  verdict "A59s the swapped, replayed and flipped objects left in the bucket (the scrub must repair them)" 1 "4 noticed and repaired"
else verdict "A59s the swapped, replayed and flipped objects left in the bucket (the scrub must repair them)" 0 \
  "swap: $swapped, replay: $put3, flip: $put2; not as expected ([damage noticed by the worker, repaired, opens, sealed]):${bad:- none}"; fi

((failed)) && echo "attacks that succeeded: ${failures[*]}"
echo "security: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# The trap harness: a class test of "nothing the application's role can create runs with more
# rights than it has". The application's role (lb_app) owns database app, its schema and its
# tables. As lb_app, before the extension's code runs, it plants traps in every schema it may
# CREATE in and on every application table (see plant_pre.sql and plant_post.sql):
#   - an operator for every operator symbol of the extension's SQL, for every pair of types
#     pg_catalog compares that way (gen_lists.py generates the symbols from src/**/*.rs and
#     sql/*.sql, so new code is covered without editing this test);
#   - functions and aggregates shadowing every function name of that SQL;
#   - FORCE row-level security with a policy calling a trap; triggers of every timing, level
#     and event; column defaults and CHECK constraints calling traps;
#   - after CREATE EXTENSION (plant_post.sql says why): casts from and to its enum types, index
#     expressions, partial-index predicates and extended statistics calling traps (the
#     extension's LB006 refusals are printed).
# Every trap calls public.trap(tag) (machinery.sql), which records (tag, current_user,
# session_user, superuser, backend type, phase) and then, by mode: returns (record), raises
# (raise) or sleeps (sleep), except in lb_app's own client backend. Every trap returns what the
# query would have had anyway, so answers can be compared.
#
# Then every entry point of the extension runs, twice: on a cluster without traps (baseline)
# and on one with them. Application functions run as lb_app; partner/admin functions as a
# superuser, with search_path = pg_catalog, pg_temp and the extension's functions named with
# their schema, so that any trap that fires is the extension's doing, not the harness's.
#
# Assertions:
#   1. record mode: no trap ran as any role but lb_app (every offending tag and role printed,
#      per entry point; the worker's separately);
#   2. record mode: each entry point's answer (snapshot bytes without their time fields,
#      readiness codes, undo/restore results, the set of deleted objects, health check names
#      and ok, ...) equals the baseline's (compare.py);
#   3. sleep mode (a trap outside lb_app's own client backend sleeps TRAPS_SLEEP s): the worker
#      uploads a new snapshot within TRAPS_BOUND s, and every entry point a superuser calls
#      returns within TRAPS_BOUND s. An entry point that writes application tables may wait on
#      the application's own code on the tables it writes (triggers, defaults, CHECK, policies:
#      rule 1 runs them as the table's owner by design), and only if that is all the traps that
#      ran in the same entry point in record mode; waiting on anything else fails.
# Then, for information only, raise mode: which superuser calls fail when the traps raise.
# Ends with the plain line 'traps: N passed, N failed'; exits non-zero on any failure.
#
# Environment: PG (15, 16, 17, 18; scripts/pg.sh), TRAPS_BOUND (10), TRAPS_SLEEP (30), TRAPS_VERBOSE,
# TRAPS_USER_SCHEMA (1: lb_app, which owns the database, also creates a schema named after the
# bootstrap superuser, first on every superuser's default search_path, and plants there too).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../../integration/lib.sh"
TEST_NAME=traps
source "$HERE/../../integration/s3.sh"
set +e
BOUND=${TRAPS_BOUND:-10}
# The worker's bound on application code (legacy_backup.job_timeout), well inside BOUND.
JOB_TIMEOUT=${TRAPS_JOB_TIMEOUT:-2s}
SLEEP=${TRAPS_SLEEP:-30}
USER_SCHEMA=${TRAPS_USER_SCHEMA:-1}
APP=lb_app
CALL_TIMEOUT=90            # no psql call of the harness may take longer than this
SU_PATH="-c search_path=pg_catalog,pg_temp"
WORK=$ROOT/.tmp/traps
rm -rf "$WORK"; mkdir -p "$WORK"
CREDENTIALS=$WORK/r2.env   # s3.sh's write_credentials writes the test key pair here
# Backups sealed, as the firm runs them: the fetch and the trail rebuild then take their full path.
SEALING_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
STARTED=$(date +%s)

passed=0; failed=0; failures=()
pass() { passed=$((passed + 1)); echo "  PASS $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); echo "  FAIL $1"; }

# --- psql -------------------------------------------------------------------------------------
# Superuser, for the harness's own reads and writes: pinned search_path, application name
# `probe` (a trap that fires in a probe is the harness's mistake and is reported as such).
qs() { PGAPPNAME=probe PGOPTIONS="$SU_PATH" timeout "$CALL_TIMEOUT" "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
         -h "$CLUSTER/sock" -p "$PORT" -U postgres -d "${DB:-app}" "$@"; }
# The application's role, with its own (default) search_path.
qa() { PGAPPNAME=${APPNAME:-lb_app} timeout "$CALL_TIMEOUT" "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
         -h "$CLUSTER/sock" -p "$PORT" -U "$APP" -d app "$@"; }
set_phase() { qs -c "UPDATE public.trap_phase SET phase = '$1'" >/dev/null; }
# Polls `sql` (superuser) until it returns `expected`, at most `seconds`; never exits.
poll() { # sql expected seconds
  local deadline=$(( $(date +%s%N) + $3 * 1000000000 ))
  while [ "$(qs -c "$1" 2>/dev/null)" != "$2" ]; do
    [ "$(date +%s%N)" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

# One entry point: runs the statements as `role` (su or app) under application_name `label`,
# and stores what it returned (or ERROR <SQLSTATE>) in $RES/label.out. TRAPS_VERBOSE=1 prints
# each error's message.
ep() { # label role psql-args...
  local label=$1 role=$2 out err rc state; shift 2
  set_phase "$label"
  err=$(mktemp)
  if [ "$role" = su ]; then
    out=$(PGAPPNAME="$label" PGOPTIONS="$SU_PATH" timeout "$CALL_TIMEOUT" "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
            -v VERBOSITY=verbose -h "$CLUSTER/sock" -p "$PORT" -U postgres -d app "$@" 2>"$err")
  else
    out=$(PGAPPNAME="$label" timeout "$CALL_TIMEOUT" "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
            -v VERBOSITY=verbose -h "$CLUSTER/sock" -p "$PORT" -U "$APP" -d app "$@" 2>"$err")
  fi
  rc=$?
  if [ "$rc" != 0 ]; then
    state=$(sed -n 's/^.*ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' "$err" | head -1)
    [ "$rc" = 124 ] && state="timeout after ${CALL_TIMEOUT}s"
    out="ERROR ${state:-rc=$rc}"
    [ -n "${TRAPS_VERBOSE:-}" ] && sed -n "s/^.*ERROR:  /    $label: /p" "$err" | head -2
  fi
  rm -f "$err"
  printf '%s\n' "$out" >"$RES/$label.out"
}
# A result the harness computes itself (worker outcomes, stored bytes), stored like an entry
# point's.
record() { printf '%s\n' "$2" >"$RES/$1.out"; }

# --- one scenario ----------------------------------------------------------------------------
# scenario baseline|traps: a fresh cluster and s3s-fs, the application, (traps,) the extension,
# every entry point. Leaves the cluster running (stopped by the next scenario or at exit).
scenario() {
  SCEN=$1
  RES=$WORK/$SCEN; mkdir -p "$RES"
  CLUSTER=$WORK/$SCEN-cluster
  S3_DIR=$WORK/$SCEN-s3
  BUCKET_DIR=$S3_DIR/data/legacy-import
  echo "== $SCEN: cluster, application, $( [ "$SCEN" = traps ] && echo 'traps, ')extension"
  start_s3
  start_cluster_with_worker "legacy_backup.max_snapshot_age = '1h'" "log_min_messages = warning" \
    "legacy_backup.job_timeout = '$JOB_TIMEOUT'" >/dev/null \
    || { echo "setup failed: cluster"; exit 1; }
  DB=postgres qs -c "CREATE ROLE $APP LOGIN" -c "CREATE DATABASE app OWNER $APP" >/dev/null || { echo "setup failed: roles"; exit 1; }
  qa -f "$ROOT/tests/fixtures/app_schema.sql" >/dev/null 2>&1 || { echo "setup failed: schema"; exit 1; }
  for s in s1:200 s2:40 s3:40 s4:20 s5:20 s6:20 s7:20; do
    qa -v sid="${s%%:*}" -v docs="${s#*:}" -v cats=12 -v months=6 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null 2>&1 \
      || { echo "setup failed: seed $s"; exit 1; }
  done
  qa -f "$ROOT/tests/fixtures/app_workload.sql" >/dev/null && qa -v app_role="$APP" -f "$HERE/machinery.sql" >/dev/null \
    || { echo "setup failed: machinery"; exit 1; }
  # The trap names the kind of process it runs in; pg_stat_activity shows that to a role only
  # for its own sessions, and traps run as lb_app inside a superuser's or the worker's. Owned
  # by the superuser, it reads only this one column of the caller's own process.
  qs -c "CREATE FUNCTION public.trap_backend_type() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
           SET search_path = pg_catalog, pg_temp AS 'SELECT a.backend_type FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a'" \
     -c "GRANT EXECUTE ON FUNCTION public.trap_backend_type() TO PUBLIC" >/dev/null || { echo "setup failed: trap_backend_type"; exit 1; }
  # Objects of session s2 for its cleanup, and neighbours that must stay.
  mkdir -p "$BUCKET_DIR/documents/s2/a" "$BUCKET_DIR/pst/s2" "$BUCKET_DIR/legacy-import/s2" "$BUCKET_DIR/documents/s20" "$BUCKET_DIR/documents/s3" \
           "$BUCKET_DIR/documents/s6/b"
  for i in 1 2 3 4 5; do echo "doc $i" >"$BUCKET_DIR/documents/s2/a/file $i.pdf"; done
  echo pst >"$BUCKET_DIR/pst/s2/archive.pst"; echo imp >"$BUCKET_DIR/legacy-import/s2/x.pdf"
  echo keep >"$BUCKET_DIR/documents/s20/keep.pdf"; echo keep >"$BUCKET_DIR/documents/s3/keep.pdf"
  for i in 1 2 3; do echo "s6 $i" >"$BUCKET_DIR/documents/s6/b/f$i.pdf"; done
  mkdir -p "$BUCKET_DIR/pst/s7" "$BUCKET_DIR/documents/s70"; echo pst >"$BUCKET_DIR/pst/s7/archive.pst"
  echo keep >"$BUCKET_DIR/documents/s70/keep.pdf"
  chown -R postgres "$S3_DIR" 2>/dev/null

  if [ "$SCEN" = traps ]; then
    if [ "$USER_SCHEMA" = 1 ]; then
      qa -c "CREATE SCHEMA \"$(qs -c "SELECT rolname FROM pg_roles WHERE oid = 10")\"" >/dev/null || echo "  (could not create the superuser's \$user schema)"
    fi
    echo "  schemas lb_app may CREATE in: $(qa -c "SELECT string_agg(nspname, ', ' ORDER BY nspname) FROM pg_namespace WHERE has_schema_privilege(current_user, oid, 'CREATE') AND nspname !~ '^pg_(toast_)?temp_'")"
    local t0=$(date +%s%N)
    qa -v ops="$(cat "$WORK/lists/operators.txt")" -v fns="$(cat "$WORK/lists/functions.txt")" \
       -f <(echo "SELECT set_config('traps.operators', :'ops', false), set_config('traps.functions', :'fns', false), set_config('traps.types', :'types', false), set_config('traps.rls', '0', false) \\g /dev/null") \
       -v types="$TYPES" -f "$HERE/plant_pre.sql" >/dev/null || { echo "planting failed"; exit 1; }
    echo "  planted before CREATE EXTENSION in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  fi
  SCHEMAS_BEFORE=$(qs -c "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE has_schema_privilege('$APP', oid, 'CREATE') AND nspname !~ '^pg_(toast_)?temp_'")

  ep E01-create-extension su -c "CREATE EXTENSION legacy_backup SCHEMA public" -c "GRANT legacy_backup_operator TO $APP"
  # The launcher starts the worker once CREATE EXTENSION has created its role.
  poll "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 20 || echo "  (the worker did not start)"
  if [ "$(cat "$RES/E01-create-extension.out")" != "" ]; then echo "  CREATE EXTENSION: $(cat "$RES/E01-create-extension.out")"; fi
  if [ "$SCEN" = traps ]; then
    qa -f "$HERE/plant_post.sql" | sed 's/^/  planted: /'
    qs -c "SELECT what || ': refused, ' || sqlstate FROM public.trap_refused ORDER BY 1" | sed 's/^/  /'
    local after; after=$(qs -c "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE has_schema_privilege('$APP', oid, 'CREATE') AND nspname !~ '^pg_(toast_)?temp_'")
    if [ "$after" = "$SCHEMAS_BEFORE" ]; then pass "CREATE EXTENSION gives lb_app CREATE on no other schema"
    else fail "CREATE EXTENSION gives lb_app CREATE on no other schema (before: $SCHEMAS_BEFORE; after: $after)"; fi
  fi
  run_entry_points
  [ "$SCEN" = traps ] && check_coverage
}

# Every function and view of the installed extension is an entry point above, or is reached
# through one (INDIRECT: name, and how). A new function fails this until the harness calls it.
INDIRECT="legacy_backup_on_create:E01 legacy_backup_export_gate:E27 legacy_backup_export_check:E27
legacy_backup_export_verdict:E27 legacy_backup_audit:E27 legacy_backup_log_change:E09 legacy_backup_log_flush:E09
drop_guard:E34h sql_drop_guard:E34c trigger_guard:E34 rewrite_guard:E34i legacy_backup_id_guard:E34j
legacy_backup_truncate_guard:E34e legacy_backup_log_category:E40 fetch_backup:E23 trail_rebuild:E24g
restore_backup:E20 final_snapshot:E41 legacy_backup_session_delete:E41"
check_coverage() {
  local name missing="" body
  body=$(sed -n '/^run_entry_points() {/,/^}/p' "$HERE/run.sh")
  for name in $(qs -c "SELECT DISTINCT p.proname FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
                         JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'legacy_backup'
                       UNION SELECT c.relname FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
                         JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'legacy_backup' WHERE c.relkind = 'v' ORDER BY 1"); do
    if ! grep -q "\b$name\b" <<<"$body" && ! grep -q "\b$name:" <<<"$INDIRECT"; then
      missing="$missing $name"
    fi
  done
  if [ -z "$missing" ]; then pass "every function and view of the installed extension is exercised"
  else fail "every function and view of the installed extension is exercised (not:$missing)"; fi
}

run_entry_points() {
  echo "  entry points"
  local snap1 key1 doc1 doc2 doc3 before after
  ep E02-health su -c "SELECT check_name, ok FROM public.legacy_backup_health() ORDER BY 1"
  ep E03-trigger-problems app -c "SELECT * FROM legacy_backup_trigger_problems() ORDER BY 1, 2"
  ep E04-snapshot-app app -c "SELECT legacy_snapshot('s1')"
  ep E05-snapshot-su su -c "SELECT public.legacy_snapshot('s1')"
  ep E06-readiness-app app -c "SELECT legacy_export_readiness('s1')"
  ep E07-take-app app -c "SELECT legacy_snapshot_take('s1', 'u-paralegal')"
  snap1=$(qs -c "SELECT id FROM legacy_backup.snapshots WHERE session_id = 's1' ORDER BY snapshot_at DESC LIMIT 1")
  key1=$(qs -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$snap1'")
  record X07-stored-body "$(qs -c "SELECT convert_from(body, 'UTF8') FROM legacy_backup.snapshots WHERE id = '$snap1'")"
  set_phase W08-upload
  if poll "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$snap1'" uploaded 20; then
    record W08-upload "uploaded; audit rows SNAPSHOT_UPLOADED: $(qs -c "SELECT count(*) FROM public.legacy_import_audit_logs WHERE action = 'SNAPSHOT_UPLOADED'")"
  else record W08-upload "not uploaded in 20 s: $(qs -c "SELECT state || ' ' || coalesce(last_error, '') FROM legacy_backup.jobs WHERE snapshot_id = '$snap1'")"; fi

  # The application's categorize transaction for three documents, then a bulk merge.
  doc1=s1-doc-000003; doc2=s1-doc-000070; doc3=s1-doc-000071
  ep E09-categorize app -c "BEGIN" -c "SELECT set_config('legacy_backup.actor', 'u-paralegal', true)" \
     -c "SELECT app_categorize('$doc1', 's1-cat-005', 'u-paralegal')" -c "SELECT app_categorize('$doc2', 's1-cat-006', 'u-paralegal')" \
     -c "SELECT app_skip('$doc3', 'u-paralegal')" -c "COMMIT"
  ep E10-merge app -c "BEGIN" -c "SELECT set_config('legacy_backup.actor', 'u-associate', true)" \
     -c "SELECT app_merge('s1', 's1-cat-001', ARRAY['s1-cat-002', 's1-cat-003'], 'u-associate')" -c "COMMIT"
  record X10-log "$(qs -c "SELECT document_id, old_category_id, new_category_id, old_status, new_status, changed_by, attribution, source, db_role
                            FROM public.category_assignment_logs WHERE source <> 'baseline' ORDER BY document_id, id")"
  ep E11-readiness-outdated app -c "SELECT legacy_export_readiness('s1')"
  ep E12-undo-merge app -c "SELECT legacy_undo_last_categorization('u-associate')"
  ep E13-undo-document app -c "SELECT legacy_undo_last_categorization('u-paralegal', '$doc2')"
  ep E14-history-app app -c "SELECT document_id, old_category_id, new_category_id, old_status, new_status, changed_by, attribution, source FROM legacy_document_history('$doc2')"
  ep E15-activity-app app -c "SELECT changed_by, name, source, documents, changes FROM legacy_session_activity('s1') ORDER BY 1, 3"
  ep E16-categorization-at-app app -c "SELECT document_id, category_id, status FROM legacy_categorization_at('s1', now())"
  ep E17-history-su su -c "SELECT document_id, old_category_id, new_category_id, old_status, new_status, changed_by, attribution, source FROM public.legacy_document_history('$doc2')"
  ep E17b-activity-su su -c "SELECT changed_by, name, source, documents, changes FROM public.legacy_session_activity('s1') ORDER BY 1, 3"
  ep E17c-categorization-at-su su -c "SELECT document_id, category_id, status FROM public.legacy_categorization_at('s1', now())"
  ep E18-take-su su -c "SELECT public.legacy_snapshot_take('s1')"
  ep E19-restore-dry-run su -c "SELECT public.legacy_restore_snapshot('$snap1', 'u-partner', true)"
  ep E20-restore su -c "SELECT public.legacy_restore_snapshot('$snap1', 'u-partner', false)"
  ep E21-undo-restore su -c "SELECT public.legacy_undo_last_categorization('u-partner')"
  ep E22-verify su -c "SELECT public.legacy_snapshot_verify('$snap1')"
  ep E23-fetch su -c "SELECT public.legacy_snapshot_fetch('$key1')"
  ep E24-import-dry-run su -c "SELECT public.legacy_snapshot_import(public.legacy_snapshot_fetch('$key1'), 'u-partner', true)"
  ep E24b-snapshot-after-restore su -c "SELECT public.legacy_snapshot('s1')"
  ep E24c-fetch-unverified su -c "SELECT public.legacy_snapshot_fetch_unverified('$key1', 'u-partner') IS NOT NULL"
  ep E24d-verify-all su -c "SELECT snapshot_key LIKE '%/trail-%' AS trail, string_agg(DISTINCT state, ',') FROM public.legacy_backup_verify_all() GROUP BY 1 ORDER BY 1"
  ep E24e-verify-storage su -c "SELECT snapshot_key LIKE '%/trail-%' AS trail, string_agg(DISTINCT state, ',') FROM public.legacy_backup_verify_storage() GROUP BY 1 ORDER BY 1"
  set_phase W24f-trail
  poll "SELECT count(*) > 0 FROM legacy_backup.trail_segments WHERE session_id = 's1' AND upload_state = 'uploaded'" t 20 \
    && record W24f-trail "s1's trail shipped" || record W24f-trail "s1's trail not shipped in 20 s"
  ep E24g-trail-rebuild-dry-run su -c "SELECT (r->'rows')::int > 0, (r->'alreadyPresent') = (r->'rows') FROM public.legacy_trail_rebuild('s1', 'u-partner') r"

  # Export of s2 through legacy_export_begin, its cleanup due at once, the worker's cleanup.
  ep E25-export-begin app -c "SELECT legacy_export_begin('s2', 'u-partner')"
  set_phase W26-upload-s2
  poll "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 's2' AND upload_state = 'uploaded'" 1 20 \
    && record W26-upload-s2 uploaded || record W26-upload-s2 "not uploaded in 20 s"
  before=$(cd "$BUCKET_DIR" && find . -type f ! -path './backups/*' | sort)
  qs -c "ALTER ROLE $APP IN DATABASE app SET legacy_backup.cleanup_delay = '0'" >/dev/null
  ep E27-export app -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 's2'
                         RETURNING id, format('%s', status), exported_at IS NOT NULL, cleanup_scheduled_at IS NOT NULL"
  qs -c "ALTER ROLE $APP IN DATABASE app RESET legacy_backup.cleanup_delay" >/dev/null
  set_phase W28-cleanup
  if poll "SELECT cleaned_up_at IS NOT NULL FROM public.legacy_import_sessions WHERE id = 's2'" t 30; then
    after=$(cd "$BUCKET_DIR" && find . -type f ! -path './backups/*' | sort)
    record W28-cleanup "cleaned up; deleted: $(comm -23 <(echo "$before") <(echo "$after") | tr '\n' ' ')
job: $(qs -c "SELECT state, progress->>'deleted' FROM legacy_backup.jobs WHERE kind = 'cleanup' AND session_id = 's2' ORDER BY id DESC LIMIT 1")
audit: $(qs -c "SELECT count(*) FROM public.legacy_import_audit_logs WHERE action = 'R2_CLEANUP_COMPLETED' AND session_id = 's2'")"
  else
    record W28-cleanup "not cleaned up in 30 s: $(qs -c "SELECT string_agg(state || ' ' || coalesce(last_error, ''), '; ') FROM legacy_backup.jobs WHERE kind = 'cleanup' AND session_id = 's2'")"
  fi

  # s3: exported with the normal delay, then a partner postpones its cleanup; its preview.
  ep E29-take-s3 app -c "SELECT legacy_snapshot_take('s3')"
  ep E29b-export-s3 app -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 's3'
                            RETURNING id, format('%s', status), exported_at IS NOT NULL, cleanup_scheduled_at IS NOT NULL"
  ep E29c-postpone app -c "SELECT legacy_postpone_cleanup('s3', 'u-partner', now() + interval '400 days')"
  poll "SELECT count(*) FROM legacy_backup.snapshots WHERE upload_state <> 'uploaded'" 0 20
  ep E30-cleanup-preview su -c "SELECT public.legacy_cleanup_session('s3', 'u-partner')"
  ep E31-readiness-su su -c "SELECT public.legacy_export_readiness('s2')" -c "SELECT public.legacy_export_readiness('s3')" -c "SELECT public.legacy_export_readiness('s1')"

  # A prune with something to prune: the first snapshot of s1 made older than the retention.
  qs -c "UPDATE legacy_backup.snapshots SET snapshot_at = snapshot_at - interval '40 days' WHERE id = '$snap1'" \
     -c "INSERT INTO legacy_backup.jobs (kind, requested_by) VALUES ('prune', 'traps')" >/dev/null
  set_phase W32-prune
  if poll "SELECT count(*) FROM legacy_backup.jobs WHERE kind = 'prune' AND requested_by = 'traps' AND state = 'succeeded'" 1 20; then
    record W32-prune "$(qs -c "SELECT progress->>'pruned' FROM legacy_backup.jobs WHERE kind = 'prune' AND requested_by = 'traps'"); body of the first snapshot: $(qs -c "SELECT body IS NULL FROM legacy_backup.snapshots WHERE id = '$snap1'")"
  else record W32-prune "not run in 20 s"; fi

  # s6: a partner's confirmed manual cleanup (the request worker queues it, the worker runs it).
  ep E32b-take-s6 app -c "SELECT legacy_snapshot_take('s6')"
  ep E32c-export-s6 app -c "UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 's6' RETURNING id"
  poll "SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 's6' AND upload_state = 'uploaded'" 1 20
  before=$(cd "$BUCKET_DIR" && find . -type f ! -path './backups/*' | sort)
  ep E32d-manual-cleanup su -c "SET legacy_backup.cleanup_wait = '20s'" -c "SELECT public.legacy_cleanup_session('s6', 'u-partner', 's6')"
  after=$(cd "$BUCKET_DIR" && find . -type f ! -path './backups/*' | sort)
  record X32-manual-cleanup "deleted: $(comm -23 <(echo "$before") <(echo "$after") | tr '\n' ' '); cleaned up: $(qs -c "SELECT cleaned_up_at IS NOT NULL FROM public.legacy_import_sessions WHERE id = 's6'")"
  ep E32e-id-checks app -c "SELECT legacy_backup_check_id('session_id', 's1'), legacy_backup_check_session('s1'), legacy_backup_protected_triggers()"

  ep E33-view-snapshots app -c "SELECT session_id, taken_by, upload_state, documents FROM legacy_snapshots ORDER BY session_id, snapshot_at"
  ep E33b-view-jobs su -c "SELECT kind, state, session_id FROM public.legacy_backup_jobs ORDER BY 1, 3, 2"

  # The guards: DDL they inspect, by the application and by a superuser.
  ep E34-guard-alter-app app -c "ALTER TABLE extracted_documents ALTER COLUMN file_name SET STATISTICS 150"
  ep E34b-guard-disable-app app -c "ALTER TABLE extracted_documents DISABLE TRIGGER legacy_backup_log_update"
  ep E34c-guard-drop-trigger-app app -c "DROP TRIGGER legacy_backup_log_flush ON extracted_documents"
  ep E34d-guard-rename-value-app app -c "ALTER TYPE \"DocumentCategorizationStatus\" RENAME VALUE 'Skipped' TO 'Skip'"
  ep E34e-guard-truncate-app app -c "TRUNCATE extracted_documents"
  ep E34f-guard-alter-su su -c "ALTER TABLE public.extracted_documents ALTER COLUMN file_name SET STATISTICS 200"
  ep E34g-guard-rename-su su -c "ALTER TABLE public.legacy_import_sessions RENAME TO sessions_renamed"
  ep E34h-guard-drop-extension-su su -c "DROP EXTENSION legacy_backup"
  ep E34i-guard-rewrite-app app -c "ALTER TABLE extracted_documents ALTER COLUMN file_size_bytes TYPE bigint"
  ep E34j-id-change-app app -c "UPDATE extracted_documents SET id = id || 'x' WHERE id = 's1-doc-000010'"
  ep E35-attach su -c "SELECT step, object, outcome FROM public.legacy_backup_attach() ORDER BY 1, 2"
  ep E36-health su -c "SELECT check_name, ok FROM public.legacy_backup_health() ORDER BY 1"
  ep E36b-readiness-app app -c "SELECT legacy_export_readiness('s1')"
  # Categories: renamed and merged as the application does (their log rows are compared).
  ep E40-categories app -c "UPDATE import_categories SET name = name || ' (renamed)', updated_at = now() WHERE id = 's4-cat-001'" \
     -c "UPDATE import_categories SET merged_into = 's4-cat-002', updated_at = now() WHERE id = 's4-cat-003'" \
     -c "SELECT category_id, change, old_name, new_name, new_merged_into, changed_by FROM category_change_logs WHERE session_id = 's4' AND change <> 'created' ORDER BY id"
  # Deleting a session with work (s7): the final snapshot in the deleting transaction, then the
  # worker's cleanup of a deleted session's files (cleanup_delay 0 for lb_app).
  before=$(cd "$BUCKET_DIR" && find . -type f ! -path './backups/*' | sort)
  qs -c "ALTER ROLE $APP IN DATABASE app SET legacy_backup.cleanup_delay = '0'" >/dev/null
  ep E41-delete-session app -c "DELETE FROM legacy_import_sessions WHERE id = 's7' RETURNING id" \
     -c "SELECT session_id, taken_by, upload_state, documents FROM legacy_snapshots WHERE session_id = 's7' ORDER BY snapshot_at"
  qs -c "ALTER ROLE $APP IN DATABASE app RESET legacy_backup.cleanup_delay" >/dev/null
  set_phase W42-deleted-cleanup
  if poll "SELECT cleaned_up_at IS NOT NULL FROM legacy_backup.cleanup_schedule WHERE session_id = 's7'" t 30; then
    after=$(cd "$BUCKET_DIR" && find . -type f ! -path './backups/*' | sort)
    record W42-deleted-cleanup "cleaned up; deleted: $(comm -23 <(echo "$before") <(echo "$after") | tr '\n' ' ')"
  else
    record W42-deleted-cleanup "not cleaned up in 30 s: $(qs -c "SELECT string_agg(state || ' ' || coalesce(last_error, ''), '; ') FROM legacy_backup.jobs WHERE kind = 'cleanup' AND session_id = 's7'")"
  fi
  set_phase done
  SNAP1=$snap1; KEY1=$key1; DOC2=$doc2
  SNAP3=$(qs -c "SELECT id FROM legacy_backup.snapshots WHERE session_id = 's3' ORDER BY snapshot_at DESC LIMIT 1")
}

# --- assertion 1 --------------------------------------------------------------------------------
assert_roles() {
  echo "== assertion 1: no trap ran as any role but $APP (record mode)"
  local ep_labels label rows
  # Control: the traps work. A superuser's statement with the default search_path that resolves
  # an operator through a schema of lb_app's must be caught, as must lb_app's own read under
  # its FORCE row-level security.
  PGAPPNAME=control timeout "$CALL_TIMEOUT" "$BIN/psql" -X -q -At -h "$CLUSTER/sock" -p "$PORT" -U postgres -d app \
    -c "SELECT count(*) FROM pg_class WHERE relname LIKE 'pg\_%' AND relname || '.' <> ''" >/dev/null
  rows=$(qs -c "SELECT count(DISTINCT role) FROM public.trap_log WHERE phase = 'control' AND superuser")
  if [ "$rows" = 1 ]; then pass "control: the traps fire (a superuser's unpinned operator)"
  else fail "control: the traps fire (superuser roles caught: ${rows:-none}): the harness itself is broken"; fi
  ep_labels=$(ls "$RES" | sed 's/\.out$//' | grep '^E')
  for label in $ep_labels; do
    rows=$(qs -c "SELECT tag || ' | ran as ' || role || CASE WHEN superuser THEN ' (superuser)' ELSE '' END || ' | session ' || session_role || ' | ' || backend_type
                  FROM public.trap_log WHERE mode = 'record' AND role <> '$APP' AND phase = '$label' AND backend_type <> 'legacy_backup worker' ORDER BY 1")
    if [ -z "$rows" ]; then pass "no trap ran as another role during $label"
    else fail "no trap ran as another role during $label"; echo "$rows" | sed 's/^/      /'; fi
  done
  rows=$(qs -c "SELECT tag || ' | ran as ' || role || CASE WHEN superuser THEN ' (superuser)' ELSE '' END || ' | during ' || string_agg(DISTINCT phase, ', ') || ' | ' || sum(calls) || ' call(s)'
                FROM public.trap_log WHERE mode = 'record' AND role <> '$APP' AND backend_type = 'legacy_backup worker' GROUP BY tag, role, superuser ORDER BY 1")
  if [ -z "$rows" ]; then pass "no trap ran as another role in the worker (upload, cleanup, prune, scheduling)"
  else fail "no trap ran as another role in the worker (upload, cleanup, prune, scheduling)"; echo "$rows" | sed 's/^/      /'; fi
  rows=$(qs -c "SELECT tag || ' | ' || role || ' | ' || phase || ' | ' || backend_type FROM public.trap_log WHERE role <> '$APP' AND phase !~ '^([EW]|control$)' AND backend_type <> 'legacy_backup worker' ORDER BY 1")
  [ -n "$rows" ] && { echo "  (traps that fired outside the entry points, in the harness's own statements:)"; echo "$rows" | sed 's/^/      /'; }
  echo "  the application's code that ran (as $APP, allowed) inside superusers' calls and the worker:"
  qs -c "SELECT phase || ': ' || string_agg(DISTINCT tag, '; ') FROM public.trap_log
         WHERE mode = 'record' AND role = '$APP' AND session_role <> '$APP' AND (phase ~ '^[EW]' OR backend_type = 'legacy_backup worker')
         GROUP BY phase ORDER BY phase" | sed 's/^/      /'
  echo "  traps that ran as $APP (allowed), by kind: $(qs -c "SELECT string_agg(k || ' ' || n, ', ' ORDER BY k) FROM (SELECT split_part(tag, ' ', 1) AS k, count(DISTINCT tag) AS n FROM public.trap_log WHERE role = '$APP' GROUP BY 1) x")"
}

# --- assertion 3 ----------------------------------------------------------------------------------
# Superuser calls in sleep mode, run concurrently, each under statement_timeout = BOUND. R: reads
# no application table for writing; W: writes application tables (may wait on their code).
# Each: KIND;NAME;ENTRY-POINTS;WRITES;STATEMENT. KIND R reads, W writes application tables;
# ENTRY-POINTS: the record-mode entry points (a regex) that ran the same code; WRITES: the
# application tables a W call writes (a regex).
SLEEP_CALLS=(
  "R;health;E02-health;;SELECT count(*) FROM public.legacy_backup_health()"
  "R;readiness;E31-readiness-su;;SELECT public.legacy_export_readiness('s1')->>'code'"
  "R;snapshot;E05-snapshot-su;;SELECT length(public.legacy_snapshot('s1')::text) > 0"
  "R;history;E17-history-su;;SELECT count(*) FROM public.legacy_document_history('@DOC2@')"
  "R;activity;E17b-activity-su;;SELECT count(*) FROM public.legacy_session_activity('s1')"
  "R;categorization-at;E17c-categorization-at-su;;SELECT count(*) FROM public.legacy_categorization_at('s1', now())"
  "R;trigger-problems;E03-trigger-problems;;SELECT count(*) FROM public.legacy_backup_trigger_problems()"
  "R;views;E33b-view-jobs;;SELECT (SELECT count(*) FROM public.legacy_snapshots) + (SELECT count(*) FROM public.legacy_backup_jobs)"
  "R;restore-dry-run;E19-restore-dry-run;;SELECT public.legacy_restore_snapshot('@SNAP1@', 'u-partner', true) IS NOT NULL"
  "R;cleanup-preview;E30-cleanup-preview;;SELECT public.legacy_cleanup_session('s3', 'u-partner') IS NOT NULL"
  "R;verify;E22-verify;;SELECT public.legacy_snapshot_verify('@SNAP1@')->>'result'"
  "R;fetch-import-dry-run;E23-fetch|E24-import-dry-run;;SELECT public.legacy_snapshot_import(public.legacy_snapshot_fetch('@KEY1@'), 'u-partner', true) IS NOT NULL"
  "R;attach;E35-attach;;SELECT count(*) FROM public.legacy_backup_attach()"
  "W;take;E18-take-su;legacy_import_audit_logs|legacy_import_sessions;SELECT public.legacy_snapshot_take('s4') IS NOT NULL"
  "W;export-begin;E25-export-begin;legacy_import_audit_logs|legacy_import_sessions;SELECT public.legacy_export_begin('s5', 'u-partner')->>'code'"
  "W;restore;E20-restore;extracted_documents|import_categories|document_batches|legacy_import_sessions|legacy_import_audit_logs;SELECT public.legacy_restore_snapshot('@SNAP3@', 'u-partner', false) IS NOT NULL"
)
parse_call() {
  IFS=';' read -r KIND NAME EPS WRITES SQL <<<"$1"
  SQL=${SQL//@SNAP1@/$SNAP1}; SQL=${SQL//@SNAP3@/$SNAP3}; SQL=${SQL//@KEY1@/$KEY1}; SQL=${SQL//@DOC2@/$DOC2}
}
# The application's own code on a table: what rule 1 runs (as the owner) when the extension
# writes that table.
# The application's own code on the tables an entry point writes (rule 1 runs it as the table's
# owner): its triggers, defaults, checks, policies, and the casts into its own enum types that
# writing their columns applies.
TABLE_CODE="^(trigger [a-z_]+|default|check|policy USING|policy WITH CHECK) on (public\\.)?"
WRITE_CASTS='^cast (text|character varying) AS public\.'


slept_in() { # phase-regex [backend-regex] -> "tag | ran as role | backend" for each trap the server
  # log says slept there since LOG_FROM (machinery.sql: trap-sleep|role|session|backend|phase|tag)
  tail -c +"$LOG_FROM" "$CLUSTER/server.log" | grep -o 'trap-sleep|.*' \
    | awk -F'|' -v p="$1" -v b="${2:-.}" '$5 ~ p && $4 ~ b { t = $0; for (i = 0; i < 5; i++) sub(/^[^|]*[|]/, "", t); print t " | ran as " $2 " | " $4 }' | sort -u
}

# The traps that ran in record mode in the given entry points (a regex), outside the worker.
ran_in() { qs -c "SELECT DISTINCT tag FROM public.trap_log WHERE mode = 'record' AND phase ~ '^($1)\$'
                  AND backend_type <> 'legacy_backup worker' ORDER BY 1"; }

assert_sleep() {
  echo "== assertion 3: sleep mode (a trap outside $APP's own backend sleeps ${SLEEP}s): bounded to ${BOUND}s"
  local i spec rc ms pids=() t0 snap4 waited rows
  LOG_FROM=$(( $(stat -c %s "$CLUSTER/server.log") + 1 ))
  qs -c "UPDATE public.trap_mode SET mode = 'sleep', sleep_seconds = $SLEEP" >/dev/null
  set_phase sleep
  mkdir -p "$WORK/sleep"
  t0=$(date +%s%N)
  # The worker: a snapshot lb_app takes now (in its own backend, where nothing sleeps) must be
  # uploaded within the bound, or, where the application's own code on the tables the worker
  # writes sleeps (its audit row), that job must have come back from it within the bound,
  # failed by legacy_backup.job_timeout and retried: the worker goes on (C6).
  snap4=$(APPNAME=S-take-app qa -c "SELECT legacy_snapshot_take('s4')->>'snapshotId'")
  for spec in "${SLEEP_CALLS[@]}"; do
    parse_call "$spec"
    (
      s=$(date +%s%N)
      PGAPPNAME="S-$NAME" PGOPTIONS="$SU_PATH -c statement_timeout=${BOUND}s" timeout $((BOUND + 20)) "$BIN/psql" -X -q -At \
        -v VERBOSITY=verbose -h "$CLUSTER/sock" -p "$PORT" -U postgres -d app -c "$SQL" >"$WORK/sleep/$NAME.out" 2>"$WORK/sleep/$NAME.err"
      echo "$? $(( ($(date +%s%N) - s) / 1000000 ))" >"$WORK/sleep/$NAME.rc"
    ) &
    pids+=($!)
  done
  if poll "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$snap4'" uploaded "$BOUND"; then waited=ok
  elif poll "SELECT j.state = 'retrying' AND j.last_error LIKE '%statement timeout%' FROM legacy_backup.jobs j WHERE j.snapshot_id = '$snap4' ORDER BY j.id DESC LIMIT 1" t 1; then
    waited=bounded
  else waited=$(qs -c "SELECT s.upload_state || coalesce(', job ' || j.state, ', no job yet') FROM legacy_backup.snapshots s
                       LEFT JOIN legacy_backup.jobs j ON j.snapshot_id = s.id WHERE s.id = '$snap4'"); fi
  for i in "${pids[@]}"; do wait "$i"; done
  qs -c "UPDATE public.trap_mode SET mode = 'record'" >/dev/null
  sleep 1
  if [ "$waited" = ok ]; then pass "sleep: the worker uploads a new snapshot within ${BOUND}s"
  elif [ "$waited" = bounded ]; then
    pass "sleep: the worker came back from the application's sleeping code within ${BOUND}s (job failed by job_timeout $JOB_TIMEOUT, retrying)"
  else
    fail "sleep: the worker uploads a new snapshot within ${BOUND}s (after ${BOUND}s: $waited)"
    echo "    the worker slept in:"; slept_in '.' 'legacy_backup worker' | sed 's/^/      /'
    echo "    in record mode these traps ran in the worker, each a place it would wait:"
    qs -c "SELECT DISTINCT tag || ' (as ' || role || ')' FROM public.trap_log WHERE mode = 'record' AND backend_type = 'legacy_backup worker' ORDER BY 1" | sed 's/^/      /'
  fi
  for spec in "${SLEEP_CALLS[@]}"; do
    parse_call "$spec"
    read -r rc ms <"$WORK/sleep/$NAME.rc"
    rows=$(slept_in "^S-$NAME\$")
    if [ "$rc" = 0 ] && [ "$ms" -le $((BOUND * 1000)) ]; then
      pass "sleep: superuser's $NAME returns within ${BOUND}s (${ms} ms)"
    elif [ "$KIND" = W ] && [ -n "$rows" ] \
         && ! grep -Evq "${TABLE_CODE}($WRITES)\$|${WRITE_CASTS}" <<<"$(sed 's/ | ran as .*//' <<<"$rows"; ran_in "$EPS")"; then
      pass "sleep: superuser's $NAME waited ${ms} ms, only on the application's own code on tables it writes (rule 1)"
      echo "$rows" | sed 's/^/      /'
    else
      fail "sleep: superuser's $NAME returns within ${BOUND}s (rc $rc after ${ms} ms$( [ "$KIND" = W ] && echo "; it writes ${WRITES//|/, }, whose own code alone may delay it"))"
      if [ -n "$rows" ]; then echo "    slept in:"; echo "$rows" | sed 's/^/      /'
      else echo "    no trap slept; $(sed -n 's/^.*ERROR:  //p' "$WORK/sleep/$NAME.err" | head -1)"; fi
      echo "    in record mode these traps ran in $EPS, each a place it would wait:"
      ran_in "$EPS" | sed 's/^/      /'
    fi
  done
  # Leave no sleeper behind: wait for the worker to upload, at most 30 s.
  poll "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$snap4'" uploaded 30 || echo "  (the worker had not recovered 30 s after the sleep phase)"
}

# For information only: which superuser calls fail when every trap raises.
inform_raise() {
  echo "== raise mode (information, not counted): superuser calls while every trap outside $APP's backend raises"
  local spec out
  qs -c "UPDATE public.trap_mode SET mode = 'raise'" >/dev/null
  for spec in "${SLEEP_CALLS[@]}"; do
    parse_call "$spec"
    out=$(PGAPPNAME="R-$NAME" PGOPTIONS="$SU_PATH -c statement_timeout=${BOUND}s" timeout $((BOUND + 20)) "$BIN/psql" -X -q -At \
          -h "$CLUSTER/sock" -p "$PORT" -U postgres -d app -c "$SQL" 2>&1 >/dev/null | sed -n 's/^.*ERROR:  //p' | head -1)
    if [ -z "$out" ]; then echo "  ok      $NAME"; else echo "  error   $NAME: ${out:0:200}"; fi
  done
  qs -c "UPDATE public.trap_mode SET mode = 'record'" >/dev/null
}

# --- assertion 4: row-level security ---------------------------------------------------------
# The extension reads application tables with row_security = off and refuses to read a table
# that has row-level security at all (C3): no policy may decide what a snapshot or a verdict
# holds. So FORCE RLS with a trap policy is planted in a phase of its own, after the comparison:
# lb_app cannot enable it (LB006); planted anyway (by a superuser, confirmed), every privileged
# read refuses with a clear error, health names it, nothing is stored, and no policy runs as
# another role.
assert_rls() {
  echo "== assertion 4: row-level security on every application table"
  local state tables t n0 n1 out
  state=$(qa -c '\set VERBOSITY verbose' -c "ALTER TABLE extracted_documents ENABLE ROW LEVEL SECURITY" 2>&1 | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' | head -1)
  if [ "$state" = LB006 ]; then pass "lb_app cannot enable row-level security on an application table (LB006)"
  else fail "lb_app cannot enable row-level security on an application table (got ${state:-no error})"; fi
  tables="legacy_import_sessions extracted_documents import_categories document_batches legacy_import_audit_logs users"
  for t in $tables; do
    qs -c "SET legacy_backup.allow_drop = on" -c "ALTER TABLE public.$t ENABLE ROW LEVEL SECURITY" -c "ALTER TABLE public.$t FORCE ROW LEVEL SECURITY" \
       -c "CREATE POLICY trap_policy ON public.$t USING (public.trap_const('policy USING on $t')) WITH CHECK (public.trap('policy WITH CHECK on $t'))" >/dev/null \
      || fail "planting row-level security on $t"
  done
  set_phase rls
  n0=$(qs -c "SELECT count(*) FROM legacy_backup.snapshots")
  for spec in "app|SELECT legacy_snapshot('s1')" "app|SELECT legacy_snapshot_take('s1')" "su|SELECT public.legacy_snapshot_take('s2')" \
              "app|SELECT legacy_export_readiness('s1')" "app|SELECT legacy_export_begin('s2')"; do
    if [ "${spec%%|*}" = app ]; then out=$(qa -c '\set VERBOSITY verbose' -c "${spec#*|}" 2>&1)
    else out=$(qs -c '\set VERBOSITY verbose' -c "${spec#*|}" 2>&1); fi
    state=$(sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' <<<"$out" | head -1)
    if [[ "$state" =~ ^(55000|42501)$ ]]; then pass "refused under row-level security ($state): ${spec#*|}"
    else fail "refused under row-level security: ${spec#*|} (got ${state:-an answer}: ${out:0:160})"; fi
  done
  n1=$(qs -c "SELECT count(*) FROM legacy_backup.snapshots")
  if [ "$n0" = "$n1" ]; then pass "no snapshot stored under row-level security"; else fail "no snapshot stored under row-level security ($n0 -> $n1)"; fi
  out=$(qs -c "SELECT count(*) FROM public.legacy_backup_health() WHERE NOT ok AND detail LIKE '%row-level security%'")
  if [ "${out:-0}" -ge 6 ]; then pass "health names row-level security on every application table ($out)"
  else fail "health names row-level security on every application table (${out:-0} of 6)"; fi
  sleep 3   # a worker cycle or more
  out=$(qs -c "SELECT string_agg(DISTINCT tag || ' as ' || role, '; ') FROM public.trap_log WHERE phase = 'rls' AND role <> '$APP' AND tag LIKE 'policy%'")
  if [ -z "$out" ]; then pass "no policy ran as another role under row-level security (worker included)"
  else fail "no policy ran as another role under row-level security: $out"; fi
  for t in $tables; do
    qs -c "SET legacy_backup.allow_drop = on" -c "DROP POLICY trap_policy ON public.$t" -c "ALTER TABLE public.$t NO FORCE ROW LEVEL SECURITY" \
       -c "ALTER TABLE public.$t DISABLE ROW LEVEL SECURITY" >/dev/null || fail "removing row-level security from $t"
  done
  set_phase done
}

# --- main ---------------------------------------------------------------------------------------
echo "lists generated from the extension's SQL (src/**/*.rs, sql/*.sql):"
python3 "$HERE/gen_lists.py" "$ROOT" "$WORK/lists" | sed 's/^/  /'
# The types the extension's statements compare (and their unknown-literal forms, which
# resolve as (type, type)); the application's enums are added from the catalog.
TYPES='text,varchar,name,"char",oid,regclass,regtype,regproc,regprocedure,regnamespace,regrole,int2,int4,int8,numeric,float8,bool,timestamptz,timestamp,date,interval,json,jsonb,uuid,bytea,xid8,pg_snapshot,text[],name[],varchar[],jsonb[]'

scenario baseline
bash "$ROOT/scripts/pgcluster.sh" stop "$CLUSTER"; stop_s3
scenario traps
assert_roles
echo "== assertion 2: answers with traps equal answers without"
python3 "$HERE/compare.py" "$WORK/baseline" "$WORK/traps" >"$WORK/compare.txt"
while IFS= read -r line; do
  case "$line" in
    "same "*) pass "same answer: ${line#same }" ;;
    "DIFFERENT "*) fail "same answer: ${line#DIFFERENT }" ;;
    *) echo "  $line" ;;
  esac
done <"$WORK/compare.txt"
assert_sleep
inform_raise
assert_rls
bash "$ROOT/scripts/pgcluster.sh" stop "$CLUSTER"; stop_s3

echo "took $(( $(date +%s) - STARTED )) s (results in $WORK)"
((failed)) && { echo "failed:"; printf '  %s\n' "${failures[@]}"; }
echo "traps: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

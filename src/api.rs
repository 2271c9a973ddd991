//! The SQL API: thin `#[pg_extern]` wrappers. Each validates its arguments, checks attachment,
//! calls the domain module and raises domain errors with their SQLSTATE.
//!
//! Every function pins `search_path` to `pg_catalog, pg_temp` and names application tables with
//! their schema (`attach::sql`), so nothing the application or the caller creates in a schema can
//! capture a name, an operator or a function in them. Who each statement runs as is decided in
//! `privilege`.

use crate::attach;
use crate::cleanup;
use crate::error::OrRaise;
use crate::gate;
use crate::ids;
use crate::recovery;
use crate::snapshot;
use crate::undo;
use pgrx::datum::{Internal, JsonB};
use pgrx::prelude::*;

/// The checked session id and the actor of a call that writes and records who acted (`actor_id`, else
/// `legacy_backup.actor`, else the database role), once attachment is checked.
fn session_and_actor(
    function: &str,
    session_id: Option<&str>,
    actor_id: Option<&str>,
) -> (String, String) {
    crate::privilege::require_primary(function).or_raise();
    let session_id = ids::validate_id("session_id", session_id).or_raise();
    attach::ensure_attached().or_raise();
    let actor = snapshot::resolve_actor(actor_id).or_raise();
    (session_id, actor)
}

/// Full categorization snapshot of one session as `json` (exact bytes, stable key order).
/// Declared by hand because pgrx has no zero-copy `json` return; json's on-disk form is the text
/// itself, so the buffer the snapshot was written into is returned as is.
#[pg_extern(sql = r#"
CREATE FUNCTION "legacy_snapshot"("session_id" TEXT) RETURNS json
STABLE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_snapshot_wrapper';
"#)]
fn legacy_snapshot(session_id: Option<&str>) -> Internal {
    let session_id = ids::validate_id("session_id", session_id).or_raise();
    attach::ensure_attached().or_raise();
    let built = snapshot::build(&session_id, None).or_raise();
    // `Internal` only carries the datum: the SQL above declares it json. The datum is a palloc'd
    // varlena of UTF-8 JSON (serde_json output) in the function's memory context.
    Internal::from(Some(pg_sys::Datum::from(built.datum)))
}

/// Builds, stores and records a snapshot in one transaction; returns its id, key, time and hash.
/// SECURITY DEFINER: it writes the extension's own tables, which callers need no privilege on.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_snapshot_take(
    session_id: Option<&str>,
    actor_id: default!(Option<&str>, "NULL"),
) -> JsonB {
    let (session_id, actor) = session_and_actor("legacy_snapshot_take", session_id, actor_id);
    let taken = snapshot::take(&session_id, &actor).or_raise();
    JsonB(serde_json::to_value(taken).expect("snapshot summary serializes"))
}

/// Internal: the final snapshot of a session being deleted (`legacy_backup_session_delete`,
/// its BEFORE DELETE trigger, sql/gate.sql); NULL when the session holds no work.
#[pg_extern(sql = r#"
CREATE FUNCTION legacy_backup."final_snapshot"("session_id" TEXT, "actor_id" TEXT)
RETURNS jsonb
VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_final_snapshot_wrapper';
"#)]
fn legacy_backup_final_snapshot(session_id: Option<&str>, actor_id: Option<&str>) -> Option<JsonB> {
    let session_id = ids::validate_id("session_id", session_id).or_raise();
    let actor = actor_id
        .ok_or_else(|| crate::error::LbError::null_value("actor_id"))
        .or_raise();
    attach::ensure_attached().or_raise();
    snapshot::take_final(&session_id, actor)
        .or_raise()
        .map(|taken| JsonB(serde_json::to_value(taken).expect("snapshot summary serializes")))
}

/// Attaches to the application's tables (idempotent) and reports each step. SECURITY DEFINER
/// (EXECUTE is granted to legacy_backup_admin only): it creates triggers on the application's
/// tables with functions no one else may execute.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_backup_attach() -> TableIterator<
    'static,
    (
        name!(step, String),
        name!(object, String),
        name!(outcome, String),
    ),
> {
    crate::privilege::require_primary("legacy_backup_attach").or_raise();
    let steps = attach::attach().or_raise();
    TableIterator::new(
        steps
            .into_iter()
            .map(|s| (s.step.to_string(), s.object, s.outcome.to_string())),
    )
}

/// Whether protection is active: tables, columns, worker, settings. SECURITY DEFINER: it counts
/// rows of the extension's own tables.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_backup_health() -> TableIterator<
    'static,
    (
        name!(check_name, String),
        name!(ok, bool),
        name!(detail, String),
    ),
> {
    let checks = crate::health::health().or_raise();
    TableIterator::new(checks.into_iter().map(|c| (c.check, c.ok, c.detail)))
}

/// Run once at the end of CREATE EXTENSION (see sql/finalize.sql); not for direct use.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_backup_on_create() {
    attach::attach_on_create().or_raise();
}

/// Reverts the actor's most recent change (to one document, or the whole transaction when it was
/// a bulk change). SECURITY DEFINER so it can mark its own changes as source `undo`.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_undo_last_categorization(
    actor_id: Option<&str>,
    document_id: default!(Option<&str>, "NULL"),
) -> JsonB {
    crate::privilege::require_primary("legacy_undo_last_categorization").or_raise();
    let actor = ids::validate_id("actor_id", actor_id).or_raise();
    let document = document_id
        .map(|d| ids::validate_id("document_id", Some(d)))
        .transpose()
        .or_raise();
    attach::ensure_attached().or_raise();
    let result = undo::undo_last(&actor, document.as_deref()).or_raise();
    JsonB(serde_json::to_value(result).expect("undo result serializes"))
}

/// Whether a session may be exported now, for the application's UI: the same verdict as the
/// export trigger. SECURITY DEFINER: it reads the extension's snapshot table.
#[pg_extern(stable, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_export_readiness(session_id: Option<&str>) -> JsonB {
    let session_id = ids::validate_id("session_id", session_id).or_raise();
    attach::ensure_attached().or_raise();
    let readiness = gate::verdict(&session_id, true).or_raise();
    JsonB(serde_json::to_value(readiness).expect("readiness serializes"))
}

/// Begins an export (see `gate::begin_export`): takes a snapshot when needed, pins it, and
/// returns the verdict. SECURITY DEFINER: it writes the extension's tables.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_export_begin(
    session_id: Option<&str>,
    actor_id: default!(Option<&str>, "NULL"),
) -> JsonB {
    let (session_id, actor) = session_and_actor("legacy_export_begin", session_id, actor_id);
    let readiness = gate::begin_export(&session_id, &actor).or_raise();
    JsonB(serde_json::to_value(readiness).expect("readiness serializes"))
}

/// The export trigger's verdict (no ALREADY_EXPORTED: the trigger asks about an export under
/// way). Not SECURITY DEFINER and not executable by PUBLIC: only the export check trigger, which
/// runs as the extension's owner, calls it.
#[pg_extern(stable, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_backup_export_verdict(session_id: &str) -> JsonB {
    let readiness = gate::verdict(session_id, false).or_raise();
    JsonB(serde_json::to_value(readiness).expect("readiness serializes"))
}

/// Moves a session's scheduled cleanup later. Active partners only. SECURITY DEFINER: it writes
/// the extension's own schedule (legacy_backup.cleanup_schedule).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_postpone_cleanup(
    session_id: Option<&str>,
    actor_id: Option<&str>,
    until: Option<pgrx::datum::TimestampWithTimeZone>,
) -> JsonB {
    crate::privilege::require_primary("legacy_postpone_cleanup").or_raise();
    let session_id = ids::validate_id("session_id", session_id).or_raise();
    let actor = ids::validate_id("actor_id", actor_id).or_raise();
    let until = until
        .ok_or_else(|| crate::error::LbError::null_value("until"))
        .or_raise();
    attach::ensure_attached().or_raise();
    JsonB(gate::postpone_cleanup(&session_id, &actor, until).or_raise())
}

/// Downloads a snapshot's object from R2 and checks its sha256 against the stored one; records
/// and returns the result (verified, mismatch, missing). Never repairs anything.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_snapshot_verify(snapshot_id: Option<&str>) -> JsonB {
    crate::privilege::require_primary("legacy_snapshot_verify").or_raise();
    let snapshot_id = ids::validate_id("snapshot_id", snapshot_id).or_raise();
    JsonB(serde_json::to_value(recovery::verify(&snapshot_id).or_raise()).expect("serializes"))
}

/// Internal: a backup object fetched and opened by the one rule of `backup::open_fetched`.
/// `legacy_snapshot_fetch` and `legacy_snapshot_fetch_unverified` (sql/finalize.sql) raise
/// `LB010` on a refusal: PostgreSQL's own SQLSTATEs are all a Rust function can raise.
#[pg_extern(sql = r#"
CREATE FUNCTION legacy_backup."fetch_backup"("key" TEXT, "override_actor" TEXT)
RETURNS TABLE ("body" TEXT, "refusal" TEXT, "detail" TEXT, "state" TEXT)
VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_fetch_backup_wrapper';
"#)]
#[allow(clippy::type_complexity)]
fn legacy_backup_fetch_backup(
    key: Option<&str>,
    override_actor: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(body, Option<String>),
        name!(refusal, Option<String>),
        name!(detail, Option<String>),
        name!(state, Option<String>),
    ),
> {
    if override_actor.is_some() {
        crate::privilege::require_primary("legacy_snapshot_fetch_unverified").or_raise();
    }
    let key = recovery::validate_snapshot_key(key).or_raise();
    let actor = override_actor
        .map(|a| ids::validate_id("actor_id", Some(a)))
        .transpose()
        .or_raise();
    let row = match recovery::fetch(&key, actor.as_deref()).or_raise() {
        recovery::Fetched::Trusted { body, finding } => (
            // Checked to be JSON by fetch; JSON is UTF-8.
            Some(
                String::from_utf8(body)
                    .map_err(|_| {
                        crate::error::LbError::invalid_parameter("snapshot object is not UTF-8")
                    })
                    .or_raise(),
            ),
            None,
            Some(finding.detail()),
            Some(finding.state().to_string()),
        ),
        recovery::Fetched::Refused(r) => (
            None,
            Some(r.message),
            Some(r.detail),
            Some("refused".into()),
        ),
    };
    TableIterator::once(row)
}

/// The C entry point of legacy_snapshot_fetch up to 0.5.0, kept so the install scripts of those
/// versions load on an update path; 0.6.0's update replaces the function with the verifying one.
#[pg_extern(sql = false)]
fn legacy_snapshot_fetch(_key: Option<&str>) -> String {
    crate::error::LbError::new(
        pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "this legacy_snapshot_fetch is from an older version of the extension",
    )
    .hint("ALTER EXTENSION legacy_backup UPDATE; fetching then verifies what it fetches.")
    .raise()
}

/// Internal: a session's audit trail rebuilt from object storage (`legacy_trail_rebuild` raises
/// a refusal as `LB010`).
#[pg_extern(sql = r#"
CREATE FUNCTION legacy_backup."trail_rebuild"("session_id" TEXT, "actor_id" TEXT, "dry_run" bool)
RETURNS jsonb
VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_trail_rebuild_wrapper';
"#)]
fn legacy_backup_trail_rebuild(
    session_id: Option<&str>,
    actor_id: Option<&str>,
    dry_run: Option<bool>,
) -> JsonB {
    crate::privilege::require_primary("legacy_trail_rebuild").or_raise();
    let session_id = ids::validate_id("session_id", session_id).or_raise();
    let actor = ids::validate_id("actor_id", actor_id).or_raise();
    let dry_run = dry_run
        .ok_or_else(|| crate::error::LbError::null_value("dry_run"))
        .or_raise();
    attach::ensure_attached().or_raise();
    JsonB(
        match recovery::rebuild_trail(&session_id, &actor, dry_run).or_raise() {
            Ok(report) => report,
            Err(refusal) => {
                serde_json::json!({"refusal": refusal.message, "detail": refusal.detail})
            }
        },
    )
}

/// Every snapshot the database knows, checked in object storage and along its chain, and every
/// unknown object under backups/.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_backup_verify_all() -> TableIterator<
    'static,
    (
        name!(snapshot_key, String),
        name!(session_id, String),
        name!(state, String),
        name!(detail, String),
    ),
> {
    crate::privilege::require_primary("legacy_backup_verify_all").or_raise();
    let rows = recovery::verify_all().or_raise();
    TableIterator::new(
        rows.into_iter()
            .map(|r| (r.snapshot_key, r.session_id, r.state.to_string(), r.detail)),
    )
}

/// The same walk from object storage alone (seals, chains, gaps), for a database that was lost.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_backup_verify_storage() -> TableIterator<
    'static,
    (
        name!(snapshot_key, String),
        name!(session_id, String),
        name!(state, String),
        name!(detail, String),
    ),
> {
    let rows = recovery::verify_storage().or_raise();
    TableIterator::new(
        rows.into_iter()
            .map(|r| (r.snapshot_key, r.session_id, r.state.to_string(), r.detail)),
    )
}

/// Internal: a session's categorization restored from a stored snapshot; a refusal (body pruned
/// and its object failing verification) comes back as `{refusal, detail}`, which
/// `legacy_restore_snapshot` (sql/finalize.sql) raises as `LB010`.
#[pg_extern(sql = r#"
CREATE FUNCTION legacy_backup."restore_backup"("snapshot_id" TEXT, "actor_id" TEXT, "dry_run" bool)
RETURNS jsonb
VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_restore_backup_wrapper';
"#)]
fn legacy_backup_restore_backup(
    snapshot_id: Option<&str>,
    actor_id: Option<&str>,
    dry_run: Option<bool>,
) -> JsonB {
    crate::privilege::require_primary("legacy_restore_snapshot").or_raise();
    let snapshot_id = ids::validate_id("snapshot_id", snapshot_id).or_raise();
    let actor = ids::validate_id("actor_id", actor_id).or_raise();
    let dry_run = dry_run
        .ok_or_else(|| crate::error::LbError::null_value("dry_run"))
        .or_raise();
    attach::ensure_attached().or_raise();
    JsonB(
        match recovery::restore_snapshot(&snapshot_id, &actor, dry_run).or_raise() {
            Ok(report) => serde_json::to_value(report).expect("serializes"),
            Err(refusal) => {
                serde_json::json!({"refusal": refusal.message, "detail": refusal.detail})
            }
        },
    )
}

/// The C entry point of legacy_restore_snapshot up to 0.5.0, kept so the install scripts of
/// those versions load on an update path; 0.6.0's update replaces the function.
#[pg_extern(sql = false)]
fn legacy_restore_snapshot(
    _snapshot_id: Option<&str>,
    _actor_id: Option<&str>,
    _dry_run: Option<bool>,
) -> JsonB {
    crate::error::LbError::new(
        pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "this legacy_restore_snapshot is from an older version of the extension",
    )
    .hint("ALTER EXTENSION legacy_backup UPDATE; a restore then verifies what it fetches.")
    .raise()
}

/// Restores from a snapshot document (e.g. legacy_snapshot_fetch(key)), dry run by default.
/// Partners only.
#[pg_extern(sql = r#"
CREATE FUNCTION "legacy_snapshot_import"("snapshot" json, "actor_id" TEXT, "dry_run" bool DEFAULT true) RETURNS jsonb
VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_snapshot_import_wrapper';
"#)]
fn legacy_snapshot_import(
    snapshot: Option<&str>,
    actor_id: Option<&str>,
    dry_run: Option<bool>,
) -> JsonB {
    crate::privilege::require_primary("legacy_snapshot_import").or_raise();
    let snapshot = snapshot
        .ok_or_else(|| crate::error::LbError::null_value("snapshot"))
        .or_raise();
    let actor = ids::validate_id("actor_id", actor_id).or_raise();
    let dry_run = dry_run
        .ok_or_else(|| crate::error::LbError::null_value("dry_run"))
        .or_raise();
    attach::ensure_attached().or_raise();
    JsonB(
        serde_json::to_value(recovery::import_snapshot(snapshot, &actor, dry_run).or_raise())
            .expect("serializes"),
    )
}

/// A partner's manual cleanup of a session's files: a preview without `confirm`, the cleanup
/// with `confirm` equal to the session id. Runs in the worker; waits up to cleanup_wait.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_cleanup_session(
    session_id: Option<&str>,
    actor_id: Option<&str>,
    confirm: default!(Option<&str>, "NULL"),
) -> JsonB {
    crate::privilege::require_primary("legacy_cleanup_session").or_raise();
    let session_id = ids::validate_id("session_id", session_id).or_raise();
    let actor = ids::validate_id("actor_id", actor_id).or_raise();
    attach::ensure_attached().or_raise();
    JsonB(cleanup::cleanup_session(&session_id, &actor, confirm).or_raise())
}

/// Writes a row of the application's audit log as the log table's owner (`app_audit_log::write`);
/// for the extension's own triggers, which run as the extension's owner. Not for PUBLIC.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_backup_audit(session_id: &str, user_id: &str, action: &str, details: JsonB) {
    Spi::connect_mut(|client| {
        crate::app_audit_log::write(client, session_id, user_id, action, &details.0)
    })
    .or_raise();
}

/// The extension's triggers on application tables that exist but do not do their job (disabled,
/// replication-only, calling another function, renamed). Empty when all is well. Reads only the
/// catalog; the trigger guard calls it as the role that ran the DDL.
#[pg_extern(stable, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_backup_trigger_problems(
) -> TableIterator<'static, (name!(trigger_name, String), name!(problem, String))> {
    TableIterator::new(attach::tampered_triggers().or_raise())
}

/// The id rule (`ids::validate_id`) for the extension's SQL-language functions: NULL 22004,
/// empty or unsafe 22023.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn legacy_backup_check_id(param: &str, value: Option<&str>) {
    ids::validate_id(param, value).or_raise();
}

/// The names of the extension's triggers on application tables (`attach::TRIGGERS`), for the
/// event triggers of sql/guard.sql. In the extension's schema, executable by everyone: the
/// event triggers run as whoever runs the DDL, who may lack USAGE on schema legacy_backup.
#[pg_extern(
    requires = ["bootstrap"],
    sql = r#"
CREATE FUNCTION @extschema@.legacy_backup_protected_triggers() RETURNS text[]
IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c AS 'MODULE_PATHNAME', 'legacy_backup_protected_triggers_wrapper';
"#
)]
fn legacy_backup_protected_triggers() -> Vec<String> {
    attach::TRIGGERS
        .iter()
        .map(|trigger| trigger.0.to_string())
        .collect()
}

//! The export gate: whether a session may be marked `Exported`, decided in one place for both
//! the trigger on `legacy_import_sessions` (sql/gate.sql) and `legacy_export_readiness`, so the two
//! always agree. Also the partner-only postponement of a scheduled cleanup, and the beginning of
//! an export (`begin_export`).
//!
//! Verdict, in order: no snapshot -> SNAPSHOT_REQUIRED; newest snapshot older than
//! `legacy_backup.max_snapshot_age` -> SNAPSHOT_STALE; categorization changed after it ->
//! SNAPSHOT_OUTDATED; else READY. "Changed after it" is exact when the audit trail is active: a
//! logged change is in the snapshot exactly when its transaction is visible in the MVCC snapshot
//! stored with it (plus, for the caller's own transaction, when it came before the snapshot).
//! Without the audit trigger, documents whose categorized_at or updated_at is later than the
//! snapshot count as changes (conservative: any later update counts).

use crate::error::{LbError, LbResult};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    Ready,
    SnapshotRequired,
    SnapshotStale,
    SnapshotOutdated,
    AuditTrailInactive,
    AlreadyExported,
}

/// What the application's UI and the trigger get. Field names are the UI's (camelCase).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub ready: bool,
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
    pub session_id: String,
    pub snapshot_id: Option<String>,
    pub snapshot_key: Option<String>,
    pub last_snapshot_at: Option<String>,
    pub snapshot_age_minutes: Option<f64>,
    pub changes_since_snapshot: Option<i64>,
    pub audit_log_active: bool,
    pub snapshot_uploaded: bool,
    pub cleanup_scheduled_at: Option<String>,
    pub cleaned_up_at: Option<String>,
    pub exported_at: Option<String>,
    /// When `legacy_export_begin` pinned a snapshot for an export under way: the verdict is then
    /// about that snapshot (its age is no reason to refuse; a change since it is).
    pub export_begun_at: Option<String>,
}

/// Runs as the extension's owner over the application's session row: names qualified, the enum
/// read with format() (never a cast), operators from pg_catalog only.
const VERDICT_QUERY: &str = r#"
WITH snap AS (
    SELECT n.id, n.snapshot_key, n.snapshot_at, n.visibility, n.upload_state = 'uploaded' AS uploaded,
           b.begun_at
    FROM legacy_backup.snapshots n @pin_join@
    WHERE n.session_id = $1
    ORDER BY b.begun_at IS NOT NULL DESC, n.snapshot_at DESC, n.created_at DESC LIMIT 1
)
SELECT pg_catalog.format('%s', s.status), to_char(s.cleanup_scheduled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       to_char(s.cleaned_up_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       to_char(s.exported_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       snap.id, snap.snapshot_key,
       to_char(snap.snapshot_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       coalesce(snap.uploaded, false),
       round((extract(epoch FROM statement_timestamp() - snap.snapshot_at) / 60)::numeric, 1)::float8,
       (statement_timestamp() - snap.snapshot_at) > pg_catalog.make_interval(secs => $2),
       CASE WHEN snap.id IS NULL THEN NULL ELSE (
                SELECT count(*) FROM @extschema@.category_assignment_logs l
                WHERE l.session_id = $1 AND l.source <> 'baseline'
                  AND l.txid >= pg_snapshot_xmin(snap.visibility)
                  AND (NOT pg_visible_in_snapshot(l.txid, snap.visibility)
                       OR (l.txid = pg_current_xact_id_if_assigned() AND l.changed_at > snap.snapshot_at)))
            + @category_changes@
       END,
       NULL::text,
       s.id IS NOT NULL,
       to_char(snap.begun_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM (SELECT 1) one LEFT JOIN snap ON true
LEFT JOIN @extschema@.legacy_import_sessions s ON s.id = $1
"#;

/// Categories created, renamed, merged, moved or deleted since the snapshot: they are in it too.
/// (Absent while a 0.4.0 database runs this library on its way to the update: none counted.)
const CATEGORY_CHANGES: &str = "(SELECT count(*) FROM @extschema@.category_change_logs k
                WHERE k.session_id = $1 AND k.txid >= pg_snapshot_xmin(snap.visibility)
                  AND (NOT pg_visible_in_snapshot(k.txid, snap.visibility)
                       OR (k.txid = pg_current_xact_id_if_assigned() AND k.changed_at > snap.snapshot_at)))";

/// An export under way is judged against the snapshot it began on, whatever was taken since: a
/// change after the begin refuses it even when a newer snapshot holds that change, because the
/// upload did not.
const PIN_JOIN: &str =
    "LEFT JOIN legacy_backup.export_begins b ON b.session_id = n.session_id AND b.snapshot_id = n.id";
const NO_PIN_JOIN: &str = "LEFT JOIN (SELECT NULL::timestamptz AS begun_at) b ON false";

/// Whether every trigger on extracted_documents (the ones that keep the audit trail) exists,
/// calls the extension's function and fires: without them, "no change since the snapshot"
/// cannot be known, so no export is allowed.
pub fn audit_trail_recording() -> LbResult<bool> {
    for trigger in crate::attach::triggers_of_installed_version()?
        .iter()
        .filter(|t| t.2 == "extracted_documents")
    {
        // (A trigger whose function an older installed version lacks comes with its update.)
        if crate::attach::function_exists(trigger.4)?
            && crate::attach::trigger_state(trigger)? != Some(crate::attach::TriggerState::Intact)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The gate's verdict. With `include_status`, a session already `Exported` reports
/// ALREADY_EXPORTED (the UI's question); the trigger asks without it, since the row it guards
/// still holds the old status.
pub fn verdict(session_id: &str, include_status: bool) -> LbResult<Readiness> {
    // Called from the export check trigger too, which reads the sessions table by name.
    crate::attach::lock_app_tables()?;
    let audit_active = audit_trail_recording()?;
    // Before 0.4.0's update script has run, the table of begun exports does not exist yet.
    let pins = crate::read::one::<bool>(
        "SELECT pg_catalog.to_regclass('legacy_backup.export_begins') IS NOT NULL",
    )?
    .unwrap_or(false);
    let category_log = crate::attach::app_table_oid("category_change_logs")?.is_some();
    let query = crate::attach::sql(&VERDICT_QUERY.replace(
        "@category_changes@",
        if category_log { CATEGORY_CHANGES } else { "0" },
    ))?
    .replace("@pin_join@", if pins { PIN_JOIN } else { NO_PIN_JOIN });
    Spi::connect(|client| {
        let max_age_secs = crate::guc::max_snapshot_age().as_secs_f64();
        let rows = client.select(&query, None, &[session_id.into(), max_age_secs.into()])?;
        let row = rows.first();
        let status: Option<String> = row.get(1)?;
        let session_exists: bool = row.get(13)?.unwrap_or(false);
        if include_status && !session_exists {
            return Err(LbError::not_found(format!(
                "import session \"{session_id}\" does not exist"
            ))
            .hint("Check the id against legacy_import_sessions.id."));
        }
        let snapshot_id: Option<String> = row.get(5)?;
        let age: Option<f64> = row.get(9)?;
        let stale: bool = row.get(10)?.unwrap_or(false);
        let changes: Option<i64> = row.get(11)?;
        let max_age = crate::guc::text(&crate::guc::MAX_SNAPSHOT_AGE);
        // An export that began on a snapshot is not refused for that snapshot's age.
        let export_begun_at: Option<String> = row.get(14)?;
        let stale = stale && export_begun_at.is_none();
        let take = format!("Take a snapshot first: SELECT legacy_snapshot_take('{session_id}');");
        let age_text = age.map(|a| format!("{a} minutes")).unwrap_or_default();
        let (code, message, hint) = if include_status && status.as_deref() == Some("Exported") {
            (
                Code::AlreadyExported,
                format!("session \"{session_id}\" is already exported"),
                None,
            )
        } else if !audit_active {
            (
                Code::AuditTrailInactive,
                format!("export of session \"{session_id}\" refused: the audit trail is not recording (a log trigger is missing, disabled or replaced)"),
                Some("See SELECT * FROM legacy_backup_health(); then SELECT * FROM legacy_backup_attach(); and take a new snapshot.".to_string()),
            )
        } else if snapshot_id.is_none() {
            (
                Code::SnapshotRequired,
                format!(
                    "export of session \"{session_id}\" refused: it has no categorization snapshot"
                ),
                Some(take),
            )
        } else if stale {
            (
                Code::SnapshotStale,
                format!(
                    "export of session \"{session_id}\" refused: its newest snapshot is {age_text} old, older than legacy_backup.max_snapshot_age ({max_age})"
                ),
                Some(take),
            )
        } else if changes.unwrap_or(0) > 0 {
            (
                Code::SnapshotOutdated,
                match &export_begun_at {
                    Some(_) => format!(
                        "export of session \"{session_id}\" refused: categorization changed {} time(s) since its export began",
                        changes.unwrap_or(0)
                    ),
                    None => format!(
                        "export of session \"{session_id}\" refused: categorization changed {} time(s) since its newest snapshot ({age_text} old)",
                        changes.unwrap_or(0)
                    ),
                },
                Some(take),
            )
        } else {
            (
                Code::Ready,
                match &export_begun_at {
                    Some(_) => format!("session \"{session_id}\" may be exported: its export began on a snapshot ({age_text} old) that still holds the current categorization"),
                    None => format!("session \"{session_id}\" may be exported: its newest snapshot ({age_text} old) holds the current categorization"),
                },
                None,
            )
        };
        Ok(Readiness {
            ready: code == Code::Ready,
            code,
            message,
            hint,
            session_id: session_id.to_string(),
            snapshot_id,
            snapshot_key: row.get(6)?,
            last_snapshot_at: row.get(7)?,
            snapshot_age_minutes: age,
            changes_since_snapshot: changes,
            audit_log_active: audit_active,
            snapshot_uploaded: row.get(8)?.unwrap_or(false),
            cleanup_scheduled_at: row.get(2)?,
            cleaned_up_at: row.get(3)?,
            exported_at: row.get(4)?,
            export_begun_at,
        })
    })
}

/// Begins an export: makes sure the session has a snapshot that holds its current
/// categorization (taking one when the newest is missing, too old or outdated), pins it in
/// `legacy_backup.export_begins`, and returns the verdict. After that the final
/// `status = 'Exported'` is accepted however long the upload took, unless categorization changed
/// in the meantime (SNAPSHOT_OUTDATED). A verdict that no snapshot can mend (an inactive audit
/// trail, an exported session) is returned as is, with nothing pinned.
pub fn begin_export(session_id: &str, actor: &str) -> LbResult<Readiness> {
    // A new begin replaces an export under way: judged afresh, against the newest snapshot.
    Spi::run_with_args(
        "DELETE FROM legacy_backup.export_begins WHERE session_id = $1",
        &[session_id.into()],
    )?;
    let mut readiness = verdict(session_id, true)?;
    let mut snapshot_taken = false;
    if matches!(
        readiness.code,
        Code::SnapshotRequired | Code::SnapshotStale | Code::SnapshotOutdated
    ) {
        crate::snapshot::take(session_id, actor)?;
        snapshot_taken = true;
        readiness = verdict(session_id, true)?;
    }
    if !readiness.ready {
        return Ok(readiness);
    }
    let snapshot_id = readiness
        .snapshot_id
        .clone()
        .ok_or_else(|| LbError::internal("a ready session without a snapshot"))?;
    Spi::connect_mut(|client| -> LbResult<()> {
        let begun = client
            .update(
                "INSERT INTO legacy_backup.export_begins AS b (session_id, snapshot_id, begun_by) \
                 VALUES ($1, $2, $3) \
                 ON CONFLICT (session_id) DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id, \
                     begun_at = EXCLUDED.begun_at, begun_by = EXCLUDED.begun_by, db_role = EXCLUDED.db_role \
                 RETURNING to_char(b.begun_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                None,
                &[session_id.into(), snapshot_id.as_str().into(), actor.into()],
            )?
            .first()
            .get_one::<String>()?;
        let details = serde_json::json!({
            "snapshotId": snapshot_id,
            "snapshotKey": readiness.snapshot_key,
            "snapshotAt": readiness.last_snapshot_at,
            "snapshotTaken": snapshot_taken,
            "exportBegunAt": begun,
        });
        crate::app_audit_log::write(client, session_id, actor, "EXPORT_BEGUN", &details)?;
        readiness.export_begun_at = begun;
        Ok(())
    })?;
    Ok(readiness)
}

/// Latest cleanup date a partner may set: far enough for a legal hold, bounded against typos.
const MAX_POSTPONE: &str = "10 years";

/// Moves a scheduled cleanup later. Only an active partner; only an exported session that is not
/// cleaned up; only later than the current schedule.
pub fn postpone_cleanup(
    session_id: &str,
    actor_id: &str,
    until: pgrx::datum::TimestampWithTimeZone,
) -> LbResult<serde_json::Value> {
    crate::partner::require_partner(actor_id)?;
    Spi::connect_mut(|client| {
        // The extension's own schedule is the one that counts (and the one the worker reads).
        // A deleted session's schedule (no row of its id) may be postponed too: more time to
        // undo a mistaken delete from object storage. Locked: the session row, else the schedule.
        let checks = "$2 > statement_timestamp(), $2 <= statement_timestamp() + $3::interval, \
                      $2 > coalesce(c.scheduled_at, '-infinity'), isfinite($2)";
        let args = [session_id.into(), until.into(), MAX_POSTPONE.into()];
        let mut rows = client.update(
            &crate::attach::sql(&format!(
                "SELECT pg_catalog.format('%s', s.status), c.scheduled_at, s.cleaned_up_at IS NOT NULL, {checks}, false \
                 FROM @extschema@.legacy_import_sessions s \
                 LEFT JOIN legacy_backup.cleanup_schedule c ON c.session_id = s.id AND c.deleted_at IS NULL \
                 WHERE s.id = $1 FOR UPDATE OF s"
            ))?,
            None,
            &args,
        )?;
        if rows.is_empty() {
            rows = client.update(
                &format!(
                    "SELECT 'Exported', c.scheduled_at, c.cleaned_up_at IS NOT NULL, {checks}, true \
                     FROM legacy_backup.cleanup_schedule c WHERE c.session_id = $1 AND c.deleted_at IS NOT NULL FOR UPDATE"
                ),
                None,
                &args,
            )?;
        }
        if rows.is_empty() {
            return Err(LbError::not_found(format!(
                "import session \"{session_id}\" does not exist"
            )));
        }
        let row = rows.first();
        let status: String = row.get(1)?.unwrap_or_default();
        let deleted: bool = row.get(8)?.unwrap_or(false);
        let scheduled: Option<pgrx::datum::TimestampWithTimeZone> = row.get(2)?;
        let cleaned: bool = row.get(3)?.unwrap_or(false);
        let finite: bool = row.get(7)?.unwrap_or(false);
        let in_future: bool = row.get(4)?.unwrap_or(false);
        let bounded: bool = row.get(5)?.unwrap_or(false);
        let later: bool = row.get(6)?.unwrap_or(false);
        let state = |msg: String| {
            LbError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                msg,
            )
        };
        if status != "Exported" {
            return Err(state(format!("session \"{session_id}\" is not exported (status {status}): no cleanup is scheduled")));
        }
        if cleaned {
            return Err(state(format!(
                "session \"{session_id}\" is already cleaned up"
            )));
        }
        if !finite || !in_future || !bounded {
            return Err(LbError::invalid_parameter(format!(
                "until must be a moment in the future, at most {MAX_POSTPONE} from now"
            )));
        }
        // Only a session exported through the gate has a schedule to move.
        if scheduled.is_none() {
            return Err(state(format!(
                "session \"{session_id}\" has no scheduled cleanup: it was not exported through the export gate"
            )));
        }
        if !later {
            return Err(LbError::invalid_parameter(
                "until must be later than the current scheduled cleanup",
            )
            .hint(
                "Postponing only extends the recovery window; it never brings a cleanup forward.",
            ));
        }
        client.update(
            "INSERT INTO legacy_backup.cleanup_schedule AS c (session_id, scheduled_at, set_by) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id) DO UPDATE SET scheduled_at = EXCLUDED.scheduled_at, set_by = EXCLUDED.set_by, \
                 db_role = session_user, updated_at = now()",
            None,
            &[session_id.into(), until.into(), actor_id.into()],
        )?;
        // The application's column mirrors the record (the export check verifies exactly that).
        if !deleted {
            let mirror = crate::attach::sql(
                "UPDATE @extschema@.legacy_import_sessions SET cleanup_scheduled_at = $2, updated_at = pg_catalog.now() WHERE id = $1",
            )?;
            crate::privilege::as_owner_of("legacy_import_sessions", || {
                client.update(&mirror, None, &[session_id.into(), until.into()])?;
                Ok(())
            })?;
        }
        let details = serde_json::json!({
            "previousCleanupScheduledAt": scheduled.map(|t| t.to_string()),
            "cleanupScheduledAt": until.to_string(),
            "sessionDeleted": deleted,
        });
        crate::app_audit_log::write(client, session_id, actor_id, "CLEANUP_POSTPONED", &details)?;
        Ok(serde_json::json!({
            "sessionId": session_id,
            "actorId": actor_id,
            "previousCleanupScheduledAt": details["previousCleanupScheduledAt"],
            "cleanupScheduledAt": details["cleanupScheduledAt"],
        }))
    })
}

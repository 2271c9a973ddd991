//! The partner's manual cleanup: preview, typed confirmation, and the hand-over to the worker,
//! which runs the very same cleanup as a scheduled one (same guards, same audit row, marked
//! `triggeredManually`). No HTTP request is made while this function holds a lock: it takes none.

use crate::error::{LbError, LbResult};
use crate::guc;
use crate::partner::require_partner;
use crate::worker::jobs::JobState;
use crate::worker::settings;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;
use serde_json::json;
use std::time::Instant;

/// The snapshot a cleanup checks in object storage before deleting anything: the session's
/// newest uploaded one.
pub struct UploadedSnapshot {
    pub id: String,
    pub key: String,
    pub bytes: i64,
    pub etag: Option<String>,
}

/// What the guards let a cleanup do.
pub struct Plan {
    /// None only for a deleted session that never had a snapshot (no document, no category, no
    /// logged change).
    pub snapshot: Option<UploadedSnapshot>,
    pub session_deleted: bool,
    pub scheduled_at: Option<String>,
}

/// Why the guards refuse a cleanup.
pub enum Refused {
    /// No row of the id, and no schedule of a deleted session.
    Unknown,
    NotExported(String),
    Cleaned,
    /// Its scheduled time has not come (checked only when asked: a partner's cleanup skips it).
    NotDue,
    /// A snapshot of a deleted session (its final one?) is not uploaded yet.
    SnapshotPending,
    /// No snapshot of the session is uploaded.
    NoSnapshot,
}

/// When a scheduled cleanup is due, over `legacy_backup.cleanup_schedule c`: its time has come,
/// and so has the grace counted from when the worker first saw the export (or delete) committed.
pub const CLEANUP_DUE: &str =
    "(c.scheduled_at <= now() AND c.visible_at IS NOT NULL AND c.visible_at + c.grace <= now())";

/// The cleanup guards, checked in the database, for the worker's cleanup and the partner's alike.
/// A session that exists: exported, not cleaned up, due (with `require_due`), a snapshot
/// uploaded. A deleted session: its schedule outlived it, not cleaned up, due (with
/// `require_due`), no row of its id exists again, and every snapshot of it (the final one, if it
/// had work) uploaded. The newest uploaded snapshot is then to be checked in object storage.
pub fn plan(
    client: &SpiClient<'_>,
    session_id: &str,
    require_due: bool,
) -> LbResult<Result<Plan, Refused>> {
    // Due by the extension's own schedule, never by the application's column.
    let t = client.select(
        &crate::attach::sql(&format!("SELECT s.id IS NOT NULL, pg_catalog.format('%s', s.status), \
                coalesce(s.cleaned_up_at, c.cleaned_up_at) IS NOT NULL, c.scheduled_at::text, c.deleted_at IS NOT NULL, \
                coalesce({CLEANUP_DUE}, false), u.id, u.snapshot_key, u.bytes, u.etag, \
                EXISTS (SELECT 1 FROM legacy_backup.snapshots n WHERE n.session_id = k.id), \
                EXISTS (SELECT 1 FROM legacy_backup.snapshots n WHERE n.session_id = k.id AND n.upload_state <> 'uploaded') \
         FROM (SELECT $1::text AS id) k \
         LEFT JOIN @extschema@.legacy_import_sessions s ON s.id = k.id \
         LEFT JOIN legacy_backup.cleanup_schedule c ON c.session_id = k.id \
         LEFT JOIN LATERAL (SELECT id, snapshot_key, coalesce(object_bytes, bytes) AS bytes, etag FROM legacy_backup.snapshots \
                            WHERE session_id = k.id AND upload_state = 'uploaded' ORDER BY snapshot_at DESC LIMIT 1) u ON true"))?,
        None,
        &[session_id.into()],
    )?;
    let r = t.first();
    let flag = |i: usize| -> LbResult<bool> { Ok(r.get::<bool>(i)?.unwrap_or(false)) };
    let (exists, deleted) = (flag(1)?, flag(5)?);
    if !exists && !deleted {
        return Ok(Err(Refused::Unknown));
    }
    if exists {
        let status: String = r.get(2)?.unwrap_or_default();
        if status != "Exported" {
            return Ok(Err(Refused::NotExported(status)));
        }
    }
    if flag(3)? {
        return Ok(Err(Refused::Cleaned));
    }
    if require_due && !flag(6)? {
        return Ok(Err(Refused::NotDue));
    }
    if !exists && flag(12)? {
        return Ok(Err(Refused::SnapshotPending));
    }
    let snapshot_id: Option<String> = r.get(7)?;
    let snapshot = match (snapshot_id, flag(11)?) {
        (Some(id), _) => Some(UploadedSnapshot {
            id,
            key: r.get(8)?.unwrap_or_default(),
            bytes: r
                .get(9)?
                .ok_or_else(|| LbError::internal("the uploaded snapshot has no size"))?,
            etag: r.get(10)?,
        }),
        (None, false) if !exists => None,
        (None, _) => return Ok(Err(Refused::NoSnapshot)),
    };
    Ok(Ok(Plan {
        snapshot,
        session_deleted: !exists,
        scheduled_at: r.get(4)?,
    }))
}

fn state(message: String) -> LbError {
    LbError::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        message,
    )
}

/// The guards for a partner's cleanup, refusals as errors.
fn preconditions(session_id: &str) -> LbResult<Plan> {
    match Spi::connect(|c| plan(c, session_id, false))? {
        Ok(plan) => Ok(plan),
        Err(Refused::Unknown) => Err(LbError::not_found(format!(
            "import session \"{session_id}\" does not exist"
        ))
        .hint("A session deleted before 0.6.0, or whose files were already cleaned up, has no schedule left.")),
        Err(Refused::NotExported(status)) => Err(state(format!("session \"{session_id}\" is not exported (status {status}); only exported or deleted sessions are cleaned up"))),
        Err(Refused::Cleaned) => Err(state(format!(
            "session \"{session_id}\" is already cleaned up"
        ))),
        Err(Refused::NotDue) => unreachable!("a partner's cleanup does not wait for the schedule"),
        Err(Refused::SnapshotPending) => Err(state(format!("a snapshot of deleted session \"{session_id}\" (its final one?) is not uploaded yet"))
            .hint("Wait for the worker to upload it (legacy_snapshots view).")),
        Err(Refused::NoSnapshot) => Err(state(format!("session \"{session_id}\" has no snapshot uploaded to object storage"))
            .hint("Take a snapshot (legacy_snapshot_take) and wait for the worker to upload it (legacy_snapshots view).")),
    }
}

/// The prefixes a session's cleanup deletes (`legacy_backup.cleanup_prefixes`): each ends with
/// the session's own id and a slash, so `documents/s1/` never reaches `documents/s1x/`, and none
/// is under `backups/` (checked when the setting is set, `ids::parse_cleanup_prefixes`).
pub fn cleanup_prefixes(session_id: &str) -> Vec<String> {
    crate::guc::cleanup_prefix_templates()
        .iter()
        .map(|t| t.replace(crate::ids::SESSION_PLACEHOLDER, session_id))
        .collect()
}

pub fn cleanup_session(
    session_id: &str,
    actor: &str,
    confirm: Option<&str>,
) -> LbResult<serde_json::Value> {
    require_partner(actor)?;
    let target = preconditions(session_id)?;
    let storage = settings::sql_storage()?;
    // The preview lists the source bucket; the snapshot is checked in the backup bucket.
    let client = &storage.source;
    if let Some(snapshot) = &target.snapshot {
        match storage.backups.head_object(&snapshot.key)? {
            Some(i) if i.is(snapshot.bytes as u64, snapshot.etag.as_deref().unwrap_or_default()) => {}
            _ => {
                return Err(state(format!("snapshot {} is not verified in object storage", snapshot.key))
                    .hint("Check it with legacy_snapshot_verify(); take a new snapshot and let the worker upload it."))
            }
        }
    }
    match confirm {
        None => {
            let mut prefixes = serde_json::Map::new();
            let (mut objects, mut bytes) = (0usize, 0u64);
            for prefix in cleanup_prefixes(session_id) {
                let listed = client.list_all(&prefix, |_| {})?;
                let size: u64 = listed.iter().map(|o| o.size).sum();
                objects += listed.len();
                bytes += size;
                prefixes.insert(prefix, json!({"objects": listed.len(), "bytes": size}));
            }
            Ok(json!({
                "preview": true,
                "sessionId": session_id,
                "prefixes": prefixes,
                "totalObjects": objects,
                "totalBytes": bytes,
                "cleanupScheduledAt": target.scheduled_at,
                "sessionDeleted": target.session_deleted,
                "snapshot": target.snapshot.as_ref().map(|s| json!({"id": s.id, "key": s.key})),
                "confirmWith": session_id,
            }))
        }
        Some(c) if c == session_id => run_confirmed(session_id, actor),
        Some(_) => Err(LbError::invalid_parameter("confirmation refused: confirm must be exactly the session id")
            .hint("Call with confirm => NULL for a preview, then with confirm => '<session id>' to delete.")),
    }
}

/// A cleanup job as polled: id, state, progress, last error.
type JobProgress = (i64, JobState, serde_json::Value, Option<String>);

/// How long to wait for the short-lived request worker to queue the job.
const QUEUE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Hands the cleanup to the worker and waits up to `legacy_backup.cleanup_wait` for it.
fn run_confirmed(session_id: &str, actor: &str) -> LbResult<serde_json::Value> {
    if !crate::worker::preloaded() {
        return Err(state("the background worker is not running: legacy_backup is not in shared_preload_libraries".into()));
    }
    // SAFETY: MyDatabaseId is this backend's database.
    let db = unsafe { pg_sys::MyDatabaseId };
    crate::worker::request_manual_cleanup(db, session_id, actor).map_err(state)?;
    let wait = guc::cleanup_wait();
    let started = Instant::now();
    loop {
        // Each query sees what committed since: the worker's progress.
        let job = Spi::connect_mut(|c| -> LbResult<Option<JobProgress>> {
            let t = c.update(
                "SELECT id, state, progress::text, last_error FROM legacy_backup.jobs \
                 WHERE kind = 'cleanup' AND session_id = $1 AND created_at >= now() - interval '1 day' \
                 ORDER BY id DESC LIMIT 1",
                None,
                &[session_id.into()],
            )?;
            if t.is_empty() {
                return Ok(None);
            }
            let r = t.first();
            let progress: Option<String> = r.get_by_name("progress")?;
            let job_state: Option<String> = r.get_by_name("state")?;
            let job_state = job_state
                .as_deref()
                .and_then(JobState::from_name)
                .ok_or_else(|| LbError::internal(format!("cleanup job in state {job_state:?}")))?;
            Ok(Some((
                r.get_by_name("id")?.unwrap_or(0),
                job_state,
                serde_json::from_str(progress.as_deref().unwrap_or("{}"))
                    .map_err(|e| LbError::internal(format!("job progress is not JSON: {e}")))?,
                r.get_by_name("last_error")?,
            )))
        })?;
        if let Some((id, job_state, progress, error)) = &job {
            match job_state {
                JobState::Succeeded => {
                    return Ok(
                        json!({"sessionId": session_id, "jobId": id, "state": job_state.name(), "deleted": progress["deleted"], "finished": true}),
                    )
                }
                JobState::Failed => {
                    return Err(LbError::new(
                        PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
                        format!(
                            "cleanup job {id} failed: {}",
                            error.clone().unwrap_or_default()
                        ),
                    )
                    .hint("See the legacy_backup_jobs view."))
                }
                _ => {}
            }
        }
        // Always wait for the request to be queued (to return its job id), then up to cleanup_wait.
        let queued_in_time = job.is_some() || started.elapsed() >= QUEUE_DEADLINE;
        if queued_in_time && started.elapsed() >= wait {
            return Ok(match job {
                Some((id, job_state, progress, error)) => json!({
                    "sessionId": session_id, "jobId": id, "state": job_state.name(), "progress": progress,
                    "lastError": error, "finished": false,
                    "note": "still running; follow it in the legacy_backup_jobs view"}),
                None => {
                    json!({"sessionId": session_id, "finished": false, "note": "queued; follow it in the legacy_backup_jobs view"})
                }
            });
        }
        // SAFETY: sleeps on this backend's latch; interrupts (cancel, terminate) are honoured.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                100,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}

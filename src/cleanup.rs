//! The partner's manual cleanup: preview, typed confirmation, and the hand-over to the worker,
//! which runs the very same cleanup as a scheduled one (same guards, same audit row, marked
//! `triggeredManually`). No HTTP request is made while this function holds a lock: it takes none.

use crate::error::{LbError, LbResult};
use crate::guc;
use crate::partner::require_partner;
use crate::worker::jobs::JobState;
use crate::worker::settings;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde_json::json;
use std::time::Instant;

struct Target {
    cleanup_scheduled_at: Option<String>,
    snapshot_id: String,
    snapshot_key: String,
    snapshot_bytes: i64,
    snapshot_etag: String,
}

fn state(message: String) -> LbError {
    LbError::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        message,
    )
}

/// Exported, not cleaned up, and a snapshot uploaded; then checked in R2 right now.
fn preconditions(session_id: &str) -> LbResult<Target> {
    let target = Spi::connect(|c| -> LbResult<Target> {
        let t = c.select(
            &crate::attach::sql("SELECT pg_catalog.format('%s', s.status), s.cleaned_up_at IS NOT NULL, c.scheduled_at::text, n.id, n.snapshot_key, coalesce(n.object_bytes, n.bytes), n.etag \
             FROM @extschema@.legacy_import_sessions s \
             LEFT JOIN legacy_backup.cleanup_schedule c ON c.session_id = s.id \
             LEFT JOIN LATERAL (SELECT id, snapshot_key, bytes, object_bytes, etag FROM legacy_backup.snapshots \
                                WHERE session_id = s.id AND upload_state = 'uploaded' ORDER BY snapshot_at DESC LIMIT 1) n ON true \
             WHERE s.id = $1")?,
            None,
            &[session_id.into()],
        )?;
        if t.is_empty() {
            return Err(LbError::not_found(format!(
                "import session \"{session_id}\" does not exist"
            )));
        }
        let r = t.first();
        let status: String = r.get(1)?.unwrap_or_default();
        if status != "Exported" {
            return Err(state(format!("session \"{session_id}\" is not exported (status {status}); only exported sessions are cleaned up")));
        }
        if r.get::<bool>(2)?.unwrap_or(false) {
            return Err(state(format!(
                "session \"{session_id}\" is already cleaned up"
            )));
        }
        let snapshot_id: Option<String> = r.get(4)?;
        let Some(snapshot_id) = snapshot_id else {
            return Err(state(format!("session \"{session_id}\" has no snapshot uploaded to object storage"))
                .hint("Take a snapshot (legacy_snapshot_take) and wait for the worker to upload it (legacy_snapshots view)."));
        };
        Ok(Target {
            cleanup_scheduled_at: r.get(3)?,
            snapshot_id,
            snapshot_key: r.get(5)?.unwrap_or_default(),
            snapshot_bytes: r.get(6)?.unwrap_or(0),
            snapshot_etag: r.get(7)?.unwrap_or_default(),
        })
    })?;
    Ok(target)
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
    match storage.backups.head_object(&target.snapshot_key)? {
        Some(i) if i.is(target.snapshot_bytes as u64, &target.snapshot_etag) => {}
        _ => {
            return Err(state(format!("snapshot {} is not verified in object storage", target.snapshot_key))
                .hint("Check it with legacy_snapshot_verify(); take a new snapshot and let the worker upload it."))
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
                "cleanupScheduledAt": target.cleanup_scheduled_at,
                "snapshot": {"id": target.snapshot_id, "key": target.snapshot_key},
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

//! The worker's jobs: upload, cleanup, prune. Each runs as: claim (short transaction), work
//! (HTTP, no transaction), finish (short transaction). A crash between the two leaves the job
//! `running`; the next worker start turns it back into `retrying`, so everything resumes.

use super::settings;
use super::shutdown_requested;
use crate::backup::{classify, Finding, Recorded};
use crate::cleanup::{Plan, Refused, UploadedSnapshot, CLEANUP_DUE};
use crate::guc;
use crate::ids;
use crate::storage::{md5_hex, seal, StorageError};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::json;
use settings::Storage;

/// Database trouble while running a job: worth another attempt.
fn spi_error(e: pgrx::spi::SpiError) -> JobError {
    JobError::transient(e.to_string())
}

fn lb_error(e: crate::error::LbError) -> JobError {
    JobError::transient(e.message)
}

/// Credited in the application's audit log for what the worker does.
pub(super) const WORKER_ACTOR: &str = "legacy_backup:worker";

/// Longest wait between attempts of a failing job.
const MAX_RETRY_DELAY_SECS: i64 = 600;

/// What a job does; `legacy_backup.jobs.kind` holds its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Upload,
    Cleanup,
    Prune,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Upload => "upload",
            JobKind::Cleanup => "cleanup",
            JobKind::Prune => "prune",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [JobKind::Upload, JobKind::Cleanup, JobKind::Prune]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// Where a job stands; `legacy_backup.jobs.state` holds its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Retrying,
            JobState::Succeeded,
            JobState::Failed,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

struct Job {
    id: i64,
    kind: JobKind,
    session_id: Option<String>,
    snapshot_id: Option<String>,
    attempts: i32,
    manual: bool,
    requested_by: Option<String>,
}

/// Why a job did not finish, and whether to try again later.
pub(super) struct JobError {
    pub(super) message: String,
    retryable: bool,
    /// A backup object that is not what was written (found by a write-once upload): an alarm in
    /// the audit log and in health, never an overwrite.
    pub(super) damaged: bool,
}

impl JobError {
    pub(super) fn permanent(message: impl Into<String>) -> Self {
        JobError {
            message: message.into(),
            retryable: false,
            damaged: false,
        }
    }
    pub(super) fn transient(message: impl Into<String>) -> Self {
        JobError {
            message: message.into(),
            retryable: true,
            damaged: false,
        }
    }
}

impl From<StorageError> for JobError {
    fn from(e: StorageError) -> Self {
        JobError {
            retryable: e.is_retryable(),
            message: e.to_string(),
            damaged: false,
        }
    }
}

pub struct Runner {
    storage: Option<Result<Storage, String>>,
    /// Why the worker is idle, logged once per change.
    idle_reason: Option<String>,
}

/// Runs `f` in a transaction of its own whose statements are all bounded by
/// `legacy_backup.job_timeout` (`privilege::bounded_transaction`; the session's settings were
/// pinned when the worker connected). `Ok(None)`: the extension is not installed in this database
/// (the worker then idles). `Err`: the transaction failed and was rolled back (logged here); the
/// worker goes on, and a job it left `running` is requeued at the start of the next cycle.
pub(super) fn in_transaction<R>(
    f: impl FnOnce(&mut SpiClient<'_>) -> R,
) -> Result<Option<R>, String> {
    let result = crate::privilege::bounded_transaction(|| {
        // Installed in this database? (Names are qualified; the path holds pg_catalog only.)
        crate::attach::extension_schema().ok()?;
        // The application's tables are read by name below: locked, and checked to be tables.
        crate::attach::lock_app_tables().ok()?;
        Spi::connect_mut(|client| Some(f(client)))
    });
    // SAFETY: reports this process's table statistics, so autovacuum sees the worker's churn.
    unsafe { pg_sys::pgstat_report_stat(false) };
    if let Err(e) = &result {
        warning!("legacy_backup worker: a transaction was rolled back: {e}");
    }
    result
}

/// A job step's transaction: not installed or rolled back are both worth another attempt.
fn job_transaction<R>(f: impl FnOnce(&mut SpiClient<'_>) -> R) -> Result<R, JobError> {
    match in_transaction(f) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(JobError::transient("extension not installed")),
        Err(e) => Err(JobError::transient(e)),
    }
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    pub fn new() -> Self {
        Runner {
            storage: None,
            idle_reason: None,
        }
    }

    /// Settings changed (SIGHUP): rebuild the storage clients and reread the keys on next use.
    pub fn reload(&mut self) {
        self.storage = None;
    }

    pub(super) fn storage(&mut self) -> Result<&Storage, JobError> {
        if self.storage.is_none() {
            self.storage = Some(settings::storage_from_settings());
        }
        match self.storage.as_ref().expect("just set") {
            Ok(storage) => Ok(storage),
            // Configuration can be fixed without requeueing anything: retry later.
            Err(message) => Err(JobError::transient(message.clone())),
        }
    }

    /// Jobs left `running` by a crash, or by a transaction that failed before it recorded their
    /// outcome, go back to the queue (there is one worker, so between cycles none runs), unless
    /// they have used up their attempts (a job that crashes the worker every time must not crash
    /// it forever).
    pub fn recover_interrupted(&mut self) {
        let max_attempts = guc::MAX_ATTEMPTS.get();
        let recovered = in_transaction(|client| {
            client
                .update(
                    "WITH r AS (UPDATE legacy_backup.jobs SET \
                        state = CASE WHEN attempts >= $1 THEN 'failed' ELSE 'retrying' END, \
                        finished_at = CASE WHEN attempts >= $1 THEN now() END, next_attempt_at = now(), \
                        last_error = 'interrupted: the worker stopped while running this job' \
                      WHERE state = 'running' RETURNING 1) SELECT count(*) FROM r",
                    None,
                    &[max_attempts.into()],
                )
                .and_then(|t| t.first().get_one::<i64>())
        });
        let recovered = match recovered {
            Ok(Some(Err(e))) => {
                warning!("legacy_backup worker: could not requeue interrupted jobs: {e}");
                None
            }
            Ok(Some(Ok(n))) => n,
            Ok(None) | Err(_) => None,
        };
        if let Some(n) = recovered.filter(|n| *n > 0) {
            log!("legacy_backup worker: requeued {n} interrupted job(s)");
        }
    }

    /// Schedules due work and runs due jobs until none is left. Returns whether to look again at once.
    pub fn run_once(&mut self) -> bool {
        self.recover_interrupted();
        // Idle until the extension is installed and attached: every job touches the
        // application's tables (audit rows, sessions), and an ERROR would restart the worker.
        let attached = in_transaction(|client| {
            let is_attached = crate::attach::missing_tables()
                .map(|m| m.is_empty())
                .unwrap_or(false);
            if is_attached {
                schedule(client);
            }
            is_attached
        });
        let state = match attached {
            Ok(None) => "not installed",
            Ok(Some(false)) => "installed but not attached",
            Ok(Some(true)) => {
                // Progress, for health: a cycle that scheduled its work, or a job recorded. (Not
                // any transaction: the requeue alone commits even when nothing else can.)
                super::record_progress();
                ""
            }
            Err(_) => return false, // logged; tried again next cycle
        };
        if !state.is_empty() {
            if self.idle_reason.as_deref() != Some(state) {
                log!("legacy_backup worker: idle, the extension is {state} in this database");
                self.idle_reason = Some(state.to_string());
            }
            return false;
        }
        self.idle_reason = None;
        let mut ran = 0;
        while !shutdown_requested() {
            let Ok(Some(Some(job))) = in_transaction(claim) else {
                break;
            };
            let outcome = self.run(&job);
            // A failure here leaves the job `running`: requeued at the next cycle.
            if let Ok(Some(())) = in_transaction(|client| finish(client, &job, outcome)) {
                super::record_progress();
            }
            ran += 1;
            if ran >= 100 {
                return true; // let the loop check its latch and signals
            }
        }
        // Then the audit trail's new rows, and the objects due for their scrub; a full batch
        // means more may be waiting.
        let more_trail = self.ship_trail();
        self.scrub() >= super::scrub::SCRUB_BATCH as usize || more_trail
    }

    fn run(&mut self, job: &Job) -> Result<serde_json::Value, JobError> {
        match job.kind {
            JobKind::Upload => self.upload(job),
            JobKind::Cleanup => self.cleanup(job),
            JobKind::Prune => prune(),
        }
    }

    /// Seals the stored bytes (plain when no key is configured), PUTs them write-once, then
    /// HEAD: size and ETag (the MD5) must match before it counts. An object already at the key
    /// (412) is compared: the same content is done; anything else is an alarm.
    fn upload(&mut self, job: &Job) -> Result<serde_json::Value, JobError> {
        let snapshot_id = job
            .snapshot_id
            .clone()
            .ok_or_else(|| JobError::permanent("upload job without a snapshot"))?;
        let (recorded, body) = job_transaction(|client| {
            let t = client
                .update(
                    "SELECT snapshot_key, body, sha256, session_id FROM legacy_backup.snapshots WHERE id = $1",
                    None,
                    &[snapshot_id.as_str().into()],
                )
                .map_err(spi_error)?;
            if t.is_empty() {
                return Err(JobError::permanent(format!(
                    "snapshot {snapshot_id} no longer exists"
                )));
            }
            let r = t.first();
            let text = |name: &str| -> Result<String, JobError> {
                r.get_by_name::<String, _>(name)
                    .map_err(spi_error)?
                    .ok_or_else(|| JobError::permanent(format!("the snapshot has no {name}")))
            };
            let recorded = Recorded {
                object_key: text("snapshot_key")?,
                object_id: snapshot_id.clone(),
                session_id: text("session_id")?,
                sha256: text("sha256")?,
                sealed_key_id: None,
            };
            Ok((
                recorded,
                r.get_by_name::<Vec<u8>, _>("body").map_err(spi_error)?,
            ))
        })??;
        let body = body.ok_or_else(|| {
            JobError::permanent("the snapshot's body was pruned before it was uploaded")
        })?;
        let storage = self.storage()?;
        let bytes = body.len();
        let put = put_backup(storage, &recorded, body, false)?;
        Ok(json!({
            "snapshotKey": recorded.object_key, "etag": put.etag, "bytes": bytes,
            "objectBytes": put.object_bytes, "sealedKeyId": put.key_id, "sha256": recorded.sha256,
            "alreadyThere": put.already_there,
        }))
    }

    /// Deletes everything under `pst/{id}/` and `documents/{id}/`, only for an exported session
    /// whose newest uploaded snapshot is verified in R2 now, then confirms nothing is left.
    fn cleanup(&mut self, job: &Job) -> Result<serde_json::Value, JobError> {
        let session_id = job
            .session_id
            .clone()
            .ok_or_else(|| JobError::permanent("cleanup job without a session"))?;
        ids::validate_id("session_id", Some(&session_id))
            .map_err(|e| JobError::permanent(e.message))?;
        let manual = job.manual;
        let guard = job_transaction(|client| cleanup_guard(client, &session_id, manual))??;
        let storage = self.storage()?;
        if let Some(UploadedSnapshot {
            key, bytes, etag, ..
        }) = &guard.snapshot
        {
            let etag = etag
                .as_deref()
                .ok_or_else(|| JobError::permanent("the uploaded snapshot has no ETag"))?;
            match storage.backups.head_object(key)? {
                Some(i) if i.is(*bytes as u64, etag) => {}
                Some(i) => {
                    return Err(JobError::permanent(format!(
                        "refusing cleanup: snapshot {key} in object storage is {} bytes with ETag {}, not the {bytes} bytes / {etag} uploaded",
                        i.size, i.etag
                    )))
                }
                None => return Err(JobError::transient(format!("refusing cleanup: snapshot {key} is not in object storage"))),
            }
        }
        let snapshot_key = guard.snapshot.map(|s| s.key);
        // Deletes reach the source bucket only, never the backups.
        let client = &storage.source;
        let prefixes = crate::cleanup::cleanup_prefixes(&session_id);
        let mut deleted_total: i64 = 0;
        let mut first_keys: Vec<String> = Vec::new();
        for prefix in &prefixes {
            let objects = client.list_all(prefix, |_| {})?;
            let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
            for batch in keys.chunks(crate::storage::MAX_KEYS_PER_REQUEST) {
                if shutdown_requested() {
                    return Err(JobError::transient(format!(
                        "interrupted by shutdown after {deleted_total} objects; will resume"
                    )));
                }
                // A session re-created (deleted path) or re-opened (exported path) while this
                // runs stops it before the next request.
                if !job_transaction(|c| may_go_on(c, &session_id, guard.session_deleted))?? {
                    return Err(JobError::permanent(format!(
                        "stopped after {deleted_total} objects: the session was {} during the cleanup",
                        if guard.session_deleted { "created again" } else { "re-opened or marked" }
                    )));
                }
                let outcome = client.delete_batch(batch)?;
                deleted_total += outcome.deleted.len() as i64;
                for k in outcome.deleted.iter() {
                    if first_keys.len() < 10 {
                        first_keys.push(k.clone());
                    }
                }
                let progress = json!({"deleted": deleted_total, "prefix": prefix});
                let recorded = in_transaction(|c| {
                    let written = c.update(
                        "UPDATE legacy_backup.jobs SET progress = progress || $2::jsonb WHERE id = $1",
                        None,
                        &[job.id.into(), progress.to_string().as_str().into()],
                    );
                    warn_unless_written(written, job, "progress");
                });
                if let Ok(Some(())) = recorded {
                    super::record_progress(); // a long cleanup is progress too
                }
                if let Some((key, why)) = outcome.failed.first() {
                    return Err(JobError::transient(format!(
                        "{} object(s) could not be deleted, e.g. {key}: {why}",
                        outcome.failed.len()
                    )));
                }
            }
        }
        let mut left = 0;
        for prefix in &prefixes {
            left += client.list_all(prefix, |_| {})?.len();
        }
        if left > 0 {
            return Err(JobError::transient(format!(
                "{left} object(s) still listed after deleting; will retry"
            )));
        }
        Ok(
            json!({"deleted": deleted_total, "firstKeys": first_keys, "snapshotKey": snapshot_key,
                  "prefixes": prefixes, "sessionDeleted": guard.session_deleted}),
        )
    }
}

/// The cleanup guards (`cleanup::plan`, the partner's cleanup's too), due unless a partner
/// confirmed it; a refusal for want of an uploaded snapshot is worth another attempt.
fn cleanup_guard(
    client: &mut SpiClient<'_>,
    session_id: &str,
    manual: bool,
) -> Result<Plan, JobError> {
    match crate::cleanup::plan(client, session_id, !manual).map_err(lb_error)? {
        Ok(plan) => Ok(plan),
        Err(Refused::Unknown) => Err(JobError::permanent(format!(
            "session {session_id} no longer exists and has no cleanup scheduled"
        ))),
        Err(Refused::NotExported(status)) => Err(JobError::permanent(format!(
            "refusing cleanup: session is {status}, not Exported"
        ))),
        Err(Refused::Cleaned) => Err(JobError::permanent("session is already cleaned up")),
        Err(Refused::NotDue) => Err(JobError::permanent(
            "refusing cleanup: its scheduled time has not come (postponed?)",
        )),
        Err(Refused::SnapshotPending) => Err(JobError::transient(
            "refusing cleanup: a snapshot of the deleted session (its final one?) is not uploaded yet",
        )),
        Err(Refused::NoSnapshot) => Err(JobError::transient(
            "refusing cleanup: no snapshot of this session is uploaded yet",
        )),
    }
}

/// Whether a cleanup under way may delete its next batch: a deleted session has no row of its id
/// again; an exported one is still exported and not cleaned up.
fn may_go_on(
    client: &mut SpiClient<'_>,
    session_id: &str,
    deleted: bool,
) -> Result<bool, JobError> {
    let query = crate::attach::sql(if deleted {
        "SELECT NOT EXISTS (SELECT 1 FROM @extschema@.legacy_import_sessions s WHERE s.id = $1)"
    } else {
        "SELECT EXISTS (SELECT 1 FROM @extschema@.legacy_import_sessions s WHERE s.id = $1 \
                          AND pg_catalog.format('%s', s.status) OPERATOR(pg_catalog.=) 'Exported' AND s.cleaned_up_at IS NULL)"
    })
    .map_err(lb_error)?;
    client
        .select(&query, None, &[session_id.into()])
        .and_then(|t| t.first().get_one::<bool>())
        .map_err(spi_error)
        .map(|b| b == Some(true))
}

/// Drops bodies of uploaded snapshots older than the retention; never the newest uploaded one of
/// a session. Metadata stays.
fn prune() -> Result<serde_json::Value, JobError> {
    let retention = guc::text(&guc::SNAPSHOT_RETENTION);
    let retention_secs = guc::snapshot_retention().as_secs_f64();
    let pruned = job_transaction(|client| {
        client
            .update(
                "WITH p AS (UPDATE legacy_backup.snapshots s SET body = NULL, pruned_at = now() \
                   WHERE s.body IS NOT NULL AND s.upload_state = 'uploaded' AND s.snapshot_at < now() - pg_catalog.make_interval(secs => $1) \
                     AND s.id <> (SELECT n.id FROM legacy_backup.snapshots n WHERE n.session_id = s.session_id \
                                  AND n.upload_state = 'uploaded' ORDER BY n.snapshot_at DESC LIMIT 1) \
                   RETURNING 1) SELECT count(*) FROM p",
                None,
                &[retention_secs.into()],
            )
            .and_then(|t| t.first().get_one::<i64>())
    })?
    .map_err(spi_error)?
    .unwrap_or(0);
    Ok(json!({"pruned": pruned, "retention": retention}))
}

/// Queues what is due: uploads of pending snapshots without a job (e.g. after a restore),
/// cleanups of due sessions, and a prune at most hourly.
fn schedule(client: &mut SpiClient<'_>) {
    // An exported session with a snapshot uploaded; or a deleted one (no row of its id exists)
    // whose snapshots, if it has any, are all uploaded. cleanup_guard checks it all again.
    let cleanups = format!("INSERT INTO legacy_backup.jobs (kind, session_id, requested_by) \
         SELECT 'cleanup', c.session_id, 'schedule' FROM legacy_backup.cleanup_schedule c \
         LEFT JOIN @extschema@.legacy_import_sessions s ON s.id = c.session_id \
         WHERE {CLEANUP_DUE} \
           AND CASE WHEN s.id IS NULL \
                    THEN c.deleted_at IS NOT NULL AND c.cleaned_up_at IS NULL \
                         AND NOT EXISTS (SELECT 1 FROM legacy_backup.snapshots n \
                                         WHERE n.session_id = c.session_id AND n.upload_state <> 'uploaded') \
                    ELSE pg_catalog.format('%s', s.status) OPERATOR(pg_catalog.=) 'Exported' AND s.cleaned_up_at IS NULL \
                         AND EXISTS (SELECT 1 FROM legacy_backup.snapshots n WHERE n.session_id = s.id AND n.upload_state = 'uploaded') END \
           AND NOT EXISTS (SELECT 1 FROM legacy_backup.jobs j WHERE j.kind = 'cleanup' AND j.session_id = c.session_id \
                           AND (j.state IN ('queued', 'running', 'retrying') \
                                OR (j.state = 'failed' AND j.finished_at > now() - interval '1 hour'))) \
         ON CONFLICT DO NOTHING");
    let statements = [
        // Committed exports the worker sees for the first time: their grace starts now.
        // (The clock, not the transaction's start: a row committed while this transaction waited
        // for a lock is visible to this statement, and became so after the transaction began.)
        "UPDATE legacy_backup.cleanup_schedule SET visible_at = pg_catalog.clock_timestamp() WHERE visible_at IS NULL",
        "INSERT INTO legacy_backup.jobs (kind, session_id, snapshot_id, requested_by) \
         SELECT 'upload', s.session_id, s.id, 'worker' FROM legacy_backup.snapshots s \
         WHERE s.upload_state = 'pending' AND s.body IS NOT NULL \
           AND NOT EXISTS (SELECT 1 FROM legacy_backup.jobs j WHERE j.kind = 'upload' AND j.snapshot_id = s.id \
                           AND j.state IN ('queued', 'running', 'retrying', 'failed')) \
         ON CONFLICT DO NOTHING",
        &cleanups,
        "INSERT INTO legacy_backup.jobs (kind, requested_by) SELECT 'prune', 'schedule' \
         WHERE NOT EXISTS (SELECT 1 FROM legacy_backup.jobs WHERE kind = 'prune' AND created_at > now() - interval '1 hour')",
    ];
    for statement in statements {
        let result = crate::attach::sql(statement)
            .map_err(|e| e.message)
            .and_then(|q| {
                client
                    .update(&q, None, &[])
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            warning!("legacy_backup worker: scheduling failed: {e}");
        }
    }
}

/// Takes the next due job. A job that cannot be read (a type mismatch, an unknown kind) is
/// reported and marked failed, never skipped silently or run as something else.
fn claim(client: &mut SpiClient<'_>) -> Option<Job> {
    let t = client
        .update(
            "UPDATE legacy_backup.jobs SET state = 'running', attempts = attempts + 1, started_at = now(), finished_at = NULL \
             WHERE id = (SELECT id FROM legacy_backup.jobs WHERE state IN ('queued', 'retrying') AND next_attempt_at <= now() \
                         ORDER BY next_attempt_at, id FOR UPDATE SKIP LOCKED LIMIT 1) \
             RETURNING id, kind, session_id, snapshot_id, attempts, manual, requested_by",
            None,
            &[],
        )
        .ok()?;
    if t.is_empty() {
        return None;
    }
    let r = t.first();
    let read = || -> Result<Job, String> {
        let e = |e: pgrx::spi::SpiError| e.to_string();
        let kind: String = r.get_by_name("kind").map_err(e)?.unwrap_or_default();
        Ok(Job {
            id: r.get_by_name("id").map_err(e)?.ok_or("no id")?,
            kind: JobKind::from_name(&kind).ok_or_else(|| format!("unknown job kind {kind:?}"))?,
            session_id: r.get_by_name("session_id").map_err(e)?,
            snapshot_id: r.get_by_name("snapshot_id").map_err(e)?,
            attempts: r.get_by_name("attempts").map_err(e)?.unwrap_or(1),
            manual: r.get_by_name("manual").map_err(e)?.unwrap_or(false),
            requested_by: r.get_by_name("requested_by").map_err(e)?,
        })
    };
    match read() {
        Ok(job) => Some(job),
        Err(why) => {
            let id: Option<i64> = r.get_by_name("id").ok().flatten();
            warning!("legacy_backup worker: job {id:?} cannot be read ({why}); marked failed");
            let written = client.update(
                "UPDATE legacy_backup.jobs SET state = 'failed', finished_at = now(), last_error = $2 WHERE id = $1",
                None,
                &[id.into(), format!("cannot be read: {why}").into()],
            );
            if let Err(e) = written {
                warning!("legacy_backup worker: could not mark job {id:?} failed: {e}");
            }
            None
        }
    }
}

/// A bookkeeping write that failed is at least in the server log: the job's outcome would
/// otherwise be lost without a trace (the job itself stays `running` and is retried after a restart).
fn warn_unless_written<T>(written: Result<T, pgrx::spi::SpiError>, job: &Job, what: &str) {
    if let Err(e) = written {
        warning!(
            "legacy_backup worker: could not record the {what} of {} job {}: {e}",
            job.kind.name(),
            job.id
        );
    }
}

/// Records the outcome, with the side effects that make it count (uploaded_at, cleaned_up_at,
/// audit rows). A cleanup is marked done only if the session is still exported and not cleaned.
fn finish(client: &mut SpiClient<'_>, job: &Job, outcome: Result<serde_json::Value, JobError>) {
    // What makes a success count writes application tables, whose triggers run application
    // code: in a bounded subtransaction, so that code failing or stalling fails this job (and
    // undoes its writes) while the worker records that and goes on.
    let result = match outcome {
        Ok(details) => {
            crate::privilege::bounded_subtransaction(|| record_success(client, job, &details))
                .unwrap_or_else(|e| {
                    Err(JobError::transient(format!(
                "recording the outcome failed (application code on the tables it writes?): {e}"
            )))
                })
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(details) => {
            let written = client.update(
                "UPDATE legacy_backup.jobs SET state = 'succeeded', finished_at = now(), last_error = NULL, \
                        progress = progress || $2::jsonb WHERE id = $1",
                None,
                &[job.id.into(), details.to_string().as_str().into()],
            );
            warn_unless_written(written, job, "success");
        }
        Err(e) => {
            let max_attempts = guc::MAX_ATTEMPTS.get();
            let give_up = !e.retryable || job.attempts >= max_attempts;
            let delay = (1i64 << job.attempts.clamp(0, 20)).min(MAX_RETRY_DELAY_SECS);
            let written = client.update(
                "UPDATE legacy_backup.jobs SET state = CASE WHEN $3 THEN 'failed' ELSE 'retrying' END, \
                        finished_at = CASE WHEN $3 THEN now() END, last_error = $2, \
                        next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
                None,
                &[job.id.into(), e.message.as_str().into(), give_up.into(), (delay as f64).into()],
            );
            warn_unless_written(written, job, "failure");
            if e.damaged {
                let finding = Finding::Different(e.message.clone());
                let written = crate::privilege::bounded_subtransaction(|| {
                    crate::backup::record_check(
                        client,
                        crate::backup::BackupKind::Snapshot,
                        job.snapshot_id.as_deref().unwrap_or_default(),
                        &finding,
                        WORKER_ACTOR,
                    )
                });
                if !matches!(written, Ok(Ok(()))) {
                    warning!(
                        "legacy_backup worker: could not record the damaged backup of job {}",
                        job.id
                    );
                }
            }
            if give_up && job.kind == JobKind::Upload {
                let written = client.update(
                    "UPDATE legacy_backup.snapshots SET upload_state = 'failed' WHERE id = $1 AND upload_state = 'pending'",
                    None,
                    &[job.snapshot_id.as_deref().into()],
                );
                warn_unless_written(written, job, "the snapshot's failed upload");
            }
            if give_up {
                warning!(
                    "legacy_backup worker: {} job {} failed: {}",
                    job.kind.name(),
                    job.id,
                    e.message
                );
            }
        }
    }
}

fn record_success(
    client: &mut SpiClient<'_>,
    job: &Job,
    details: &serde_json::Value,
) -> Result<serde_json::Value, JobError> {
    match job.kind {
        JobKind::Upload => {
            let t = client
                .update(
                    "UPDATE legacy_backup.snapshots SET upload_state = 'uploaded', uploaded_at = now(), etag = $2, \
                            object_bytes = $3, sealed_key_id = $4 \
                     WHERE id = $1 RETURNING session_id",
                    None,
                    &[
                        job.snapshot_id.as_deref().into(),
                        details["etag"].as_str().into(),
                        details["objectBytes"].as_i64().into(),
                        details["sealedKeyId"].as_str().into(),
                    ],
                )
                .map_err(spi_error)?;
            let session: Option<String> = if t.is_empty() {
                None
            } else {
                t.first().get_by_name("session_id").map_err(spi_error)?
            };
            let mut audit = details.clone();
            audit["snapshotId"] = json!(job.snapshot_id);
            crate::app_audit_log::write(
                client,
                session.as_deref().unwrap_or_default(),
                WORKER_ACTOR,
                "SNAPSHOT_UPLOADED",
                &audit,
            )
            .map_err(lb_error)?;
            Ok(details.clone())
        }
        JobKind::Cleanup if details["sessionDeleted"] == json!(true) => {
            // A deleted session's end is recorded in its schedule, which outlived the row.
            let marked = client
                .update(
                    &crate::attach::sql(
                        "UPDATE legacy_backup.cleanup_schedule c SET cleaned_up_at = pg_catalog.now(), updated_at = pg_catalog.now() \
                         WHERE c.session_id = $1 AND c.deleted_at IS NOT NULL AND c.cleaned_up_at IS NULL \
                           AND NOT EXISTS (SELECT 1 FROM @extschema@.legacy_import_sessions s WHERE s.id = c.session_id) \
                         RETURNING 1",
                    )
                    .map_err(lb_error)?,
                    None,
                    &[job.session_id.as_deref().into()],
                )
                .map_err(spi_error)?
                .len();
            if marked == 0 {
                return Err(JobError::permanent(
                    "deleted session changed during cleanup (re-created or already cleaned); not marked",
                ));
            }
            write_cleanup_completed(client, job, details)
        }
        JobKind::Cleanup => {
            // Written as the sessions table's owner: the application's triggers on it run with
            // the application's rights, not the worker's.
            let mark = crate::attach::sql(
                "UPDATE @extschema@.legacy_import_sessions SET cleaned_up_at = pg_catalog.now(), updated_at = pg_catalog.now() \
                 WHERE id = $1 AND pg_catalog.format('%s', status) = 'Exported' AND cleaned_up_at IS NULL RETURNING id",
            )
            .map_err(lb_error)?;
            // The export check accepts cleaned_up_at only from the extension's cleanup.
            let marked = crate::privilege::with_source("cleanup", || {
                crate::privilege::as_owner_of("legacy_import_sessions", || {
                    Ok(client
                        .update(&mark, None, &[job.session_id.as_deref().into()])?
                        .len())
                })
            })
            .map_err(lb_error)?;
            if marked == 0 {
                return Err(JobError::permanent(
                    "session changed during cleanup (re-opened or already cleaned); not marked",
                ));
            }
            write_cleanup_completed(client, job, details)
        }
        JobKind::Prune => Ok(details.clone()),
    }
}

/// The audit row of a completed cleanup, in the name of the partner who confirmed it or of the
/// worker.
fn write_cleanup_completed(
    client: &mut SpiClient<'_>,
    job: &Job,
    details: &serde_json::Value,
) -> Result<serde_json::Value, JobError> {
    let mut audit = details.clone();
    audit["triggeredManually"] = json!(job.manual);
    audit["requestedBy"] = json!(job.requested_by);
    audit["jobId"] = json!(job.id);
    let by = if job.manual {
        job.requested_by.as_deref().unwrap_or(WORKER_ACTOR)
    } else {
        WORKER_ACTOR
    };
    crate::app_audit_log::write(
        client,
        job.session_id.as_deref().unwrap_or_default(),
        by,
        "R2_CLEANUP_COMPLETED",
        &audit,
    )
    .map_err(lb_error)?;
    Ok(details.clone())
}

/// What a write-once upload left in object storage.
pub(super) struct PutBackup {
    pub etag: String,
    pub object_bytes: i64,
    pub key_id: Option<String>,
    pub already_there: bool,
}

/// Puts a backup object: sealed with the current key when there is one. Write-once unless
/// `replace` (the scrub putting back an object found missing or not ours). Verified with HEAD.
pub(super) fn put_backup(
    storage: &Storage,
    recorded: &Recorded,
    body: Vec<u8>,
    replace: bool,
) -> Result<PutBackup, JobError> {
    let keys = storage.keys.as_ref().map_err(|e| {
        JobError::transient(format!(
            "the backup sealing key is unusable, nothing is uploaded until it is fixed: {e}"
        ))
    })?;
    let current = keys.current();
    let object = match current {
        Some(key) => seal::seal_owned(key, &recorded.context(), body),
        None => body,
    };
    let client = &storage.backups;
    let key = &recorded.object_key;
    let written = if replace {
        Some(client.put_object(key, &object)?)
    } else {
        client.put_object_once(key, &object)?
    };
    let (object, key_id, etag, already_there) = match written {
        Some(etag) => (object, current.map(|k| k.id().to_string()), etag, false),
        None => {
            // 412: an object is there. Ours (an earlier attempt that crashed before recording
            // it) if it holds this content for this key; anything else is an alarm.
            let existing = client.get_object(key)?;
            match classify(keys, recorded, existing.as_deref()) {
                Finding::Sealed { key_id } => {
                    let existing = existing.expect("found");
                    let etag = md5_hex(&existing);
                    (existing, Some(key_id), etag, true)
                }
                // The recorded sha256, plain: the body itself.
                Finding::Plain => {
                    let existing = existing.expect("found");
                    let etag = md5_hex(&existing);
                    (existing, None, etag, true)
                }
                Finding::Missing => {
                    return Err(JobError::transient(format!(
                        "{key} answered 412 (exists) but then was not found; will retry"
                    )))
                }
                Finding::Different(why) => {
                    return Err(JobError {
                        message: format!("refusing to overwrite {key}: an object that is not this snapshot is already there ({why})"),
                        retryable: false,
                        damaged: true,
                    })
                }
            }
        }
    };
    let expected = md5_hex(&object);
    let info = client
        .head_object(key)?
        .ok_or_else(|| JobError::transient(format!("{key} is missing right after upload")))?;
    if !info.is(object.len() as u64, &expected) || (!etag.is_empty() && etag != expected) {
        return Err(JobError::transient(format!(
            "verification of {key} failed: stored {} bytes, ETag {}; expected {} bytes, MD5 {expected}",
            info.size,
            info.etag,
            object.len()
        )));
    }
    Ok(PutBackup {
        etag: expected,
        object_bytes: object.len() as i64,
        key_id,
        already_there,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::seal::{sha256_hex, Key, KeyRing};
    use crate::storage::Config;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// An S3 stand-in that answers every PUT with 412 (the key exists) and serves `existing` to
    /// GET and HEAD: what R2 does when an upload finds an object already there.
    fn exists_server(existing: Vec<u8>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let answer = if head.starts_with("PUT") {
                    b"HTTP/1.1 412 Precondition Failed\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec()
                } else {
                    let mut a = format!(
                        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\nETag: \"{}\"\r\n\r\n",
                        existing.len(),
                        md5_hex(&existing)
                    )
                    .into_bytes();
                    if head.starts_with("GET") {
                        a.extend_from_slice(&existing);
                    }
                    a
                };
                let _ = stream.write_all(&answer);
            }
        });
        endpoint
    }

    fn storage(endpoint: &str, key: &Key) -> Storage {
        let client = crate::storage::Client::new(Config {
            endpoint: endpoint.into(),
            bucket: "legacy-import".into(),
            region: "auto".into(),
            access_key_id: "AK".into(),
            secret_access_key: "SK".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_attempts: 1,
            backoff: Duration::from_millis(1),
        })
        .unwrap();
        Storage {
            backups: client.for_bucket("firm-backups"),
            source: client,
            keys: Ok(KeyRing::with_current(key.clone())),
        }
    }

    const BODY: &[u8] = br#"{"formatVersion":3,"sessionId":"s1"}"#;

    fn recorded() -> Recorded {
        Recorded {
            object_key: "backups/s1/categorization-2025-12-09T10-20-30-123Z.json".into(),
            object_id: "snap-1".into(),
            session_id: "s1".into(),
            sha256: sha256_hex(BODY),
            sealed_key_id: None,
        }
    }

    #[test]
    fn a_412_on_the_same_content_counts_as_done() {
        let key = Key::from_bytes([5; 32]);
        // An earlier attempt sealed and uploaded it, then crashed before recording it.
        let earlier = seal::seal(&key, &recorded().context(), BODY);
        let storage = storage(&exists_server(earlier.clone()), &key);
        let put = put_backup(&storage, &recorded(), BODY.to_vec(), false)
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert!(put.already_there);
        assert_eq!(put.etag, md5_hex(&earlier));
        assert_eq!(put.object_bytes, earlier.len() as i64);
        assert_eq!(put.key_id.as_deref(), Some(key.id()));
    }

    #[test]
    fn a_412_on_other_content_is_an_alarm_never_an_overwrite() {
        let key = Key::from_bytes([6; 32]);
        let other = Recorded {
            object_id: "snap-0".into(),
            ..recorded()
        };
        for existing in [
            br#"{"forged":true}"#.to_vec(),
            seal::seal(&key, &other.context(), BODY),
        ] {
            let storage = storage(&exists_server(existing), &key);
            let e = match put_backup(&storage, &recorded(), BODY.to_vec(), false) {
                Ok(_) => panic!("an object that is not this snapshot was accepted"),
                Err(e) => e,
            };
            assert!(e.damaged && !e.retryable, "{}", e.message);
            assert!(
                e.message.starts_with("refusing to overwrite"),
                "{}",
                e.message
            );
        }
    }
}

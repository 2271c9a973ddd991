//! The background worker: uploads snapshots to R2 and runs the delayed cleanup. It is the only
//! code that ever deletes a session's files.
//!
//! - A launcher is registered in `_PG_init` when the library is in `shared_preload_libraries`;
//!   it starts once recovery has finished, so on a standby it never runs, and restarts 5 s after
//!   a crash. It starts the worker, connected as the role `legacy_backup_worker` (no superuser),
//!   and starts it again within a second whenever it stopped.
//! - Woken at COMMIT of a transaction that queued work (its latch is set from a commit
//!   callback), and every `legacy_backup.naptime`.
//! - Claims jobs with `FOR UPDATE SKIP LOCKED` in short transactions; never holds a transaction
//!   open across an HTTP call.
//! - Ends on SIGTERM like any backend, even inside application code its writes fire (a job
//!   cut short stays `running` and is requeued), reloads its
//!   settings on SIGHUP.

pub mod jobs;
pub mod scrub;
pub mod settings;
pub mod trail;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::time::Duration;

/// The worker's pgprocno + 1 (0: no worker running), so any backend can set its latch.
pub static WORKER_PROCNO: PgAtomic<AtomicI32> =
    unsafe { PgAtomic::new(c"legacy_backup_worker_procno") };

/// When the worker last finished a transaction (PostgreSQL timestamp, 0: never): health tells a
/// stalled worker from a running one by it.
pub static WORKER_PROGRESS: PgAtomic<AtomicI64> =
    unsafe { PgAtomic::new(c"legacy_backup_worker_progress") };

/// Whether shared memory was set up, i.e. the library was preloaded (inherited by every backend).
static SHMEM_READY: AtomicBool = AtomicBool::new(false);

pub const WORKER_TYPE: &str = "legacy_backup worker";
pub const LAUNCHER_TYPE: &str = "legacy_backup launcher";

/// The role the worker connects as: no superuser, only the grants of sql/finalize.sql and
/// `attach::attach` (docs/security.md). CREATE EXTENSION creates it.
pub const WORKER_ROLE: &str = "legacy_backup_worker";

/// How often the launcher looks for the role and for a worker that stopped (two catalog reads).
const LAUNCHER_NAP: Duration = Duration::from_secs(1);

/// Called from `_PG_init`.
pub fn init() {
    // SAFETY: reading a postmaster-set global during library load.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(WORKER_PROCNO);
    pg_shmem_init!(WORKER_PROGRESS);
    SHMEM_READY.store(true, Ordering::Relaxed);
    BackgroundWorkerBuilder::new(LAUNCHER_TYPE)
        .set_type(LAUNCHER_TYPE)
        .set_library("legacy_backup")
        .set_function("legacy_backup_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Whether the worker can exist in this server (the library was preloaded).
pub fn preloaded() -> bool {
    SHMEM_READY.load(Ordering::Relaxed)
}

/// This process's index into `ProcGlobal->allProcs`. PostgreSQL 17 replaced `PGPROC.pgprocno`
/// with the global `MyProcNumber`; both index the same array.
fn my_proc_number() -> i32 {
    #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
    // SAFETY: MyProc is this process's PGPROC, valid for its whole life.
    let procno = unsafe { (*pg_sys::MyProc).pgprocno };
    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
    // SAFETY: set once at backend start, constant afterwards.
    let procno = unsafe { pg_sys::MyProcNumber };
    procno
}

/// Wakes the worker when the current transaction commits (and not if it rolls back).
pub fn wake_at_commit() {
    if !preloaded() {
        return;
    }
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, wake_now);
}

fn wake_now() {
    let slot = WORKER_PROCNO.get().load(Ordering::Acquire);
    if slot <= 0 {
        return;
    }
    // SAFETY: slot - 1 is a valid index into ProcGlobal->allProcs, published by the worker;
    // setting another process's latch is what latches are for.
    unsafe {
        let proc = (*pg_sys::ProcGlobal).allProcs.add((slot - 1) as usize);
        pg_sys::SetLatch(&mut (*proc).procLatch);
    }
}

/// Runs `f` with every signal blocked in this thread, so threads it starts (reqwest's runtime)
/// inherit the mask and signals keep landing on the PostgreSQL main thread.
pub fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: plain pthread_sigmask calls on this thread; the old mask is restored after.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let result = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

pub fn shutdown_requested() -> bool {
    // SAFETY: flags set by the signal handlers.
    BackgroundWorker::sigterm_received()
        || unsafe { pg_sys::ShutdownRequestPending != 0 || pg_sys::ProcDiePending != 0 }
}

/// Records that the worker just finished a transaction.
pub fn record_progress() {
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    WORKER_PROGRESS.get().store(now, Ordering::Release);
}

/// When the worker last finished a transaction, if it has since the server started.
pub fn last_progress() -> Option<pg_sys::TimestampTz> {
    if !preloaded() {
        return None;
    }
    Some(WORKER_PROGRESS.get().load(Ordering::Acquire)).filter(|t| *t != 0)
}

extern "C-unwind" {
    /// PostgreSQL's own SIGTERM handler (pgrx binds it as a guarded Rust function, which a
    /// signal handler must not be).
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

/// SIGTERM as in every backend: it interrupts whatever runs, application code fired by the
/// worker's writes included (a flag alone would wait for a sleeping trigger to return).
fn die_on_sigterm() {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // SAFETY: die is PostgreSQL's own SIGTERM handler for backends. (PostgreSQL 18 renamed the
    // backend's pqsignal to pqsignal_be, keeping the name as a macro.)
    #[cfg(any(
        feature = "pg13",
        feature = "pg14",
        feature = "pg15",
        feature = "pg16",
        feature = "pg17"
    ))]
    unsafe {
        pg_sys::pqsignal(libc::SIGTERM, Some(postgres_die))
    };
    #[cfg(not(any(
        feature = "pg13",
        feature = "pg14",
        feature = "pg15",
        feature = "pg16",
        feature = "pg17"
    )))]
    unsafe {
        pg_sys::pqsignal_be(libc::SIGTERM, Some(postgres_die))
    };
}

/// After a SIGHUP: the configuration files again, and the pinned settings over them.
fn reload_settings() {
    // SAFETY: re-reading the configuration files is what a SIGHUP asks for.
    unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    crate::privilege::pin_worker_session();
}

/// The launcher: the only process of the extension connected as a superuser, and it runs nothing
/// but two catalog queries. It starts the worker, as `legacy_backup_worker`, once that role
/// exists, and again whenever it stopped (a worker that ended on an error, or was terminated),
/// within a second.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn legacy_backup_launcher_main(_arg: pg_sys::Datum) {
    die_on_sigterm();
    let database = crate::guc::text(&crate::guc::DATABASE);
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    crate::privilege::pin_worker_session();
    let mut waiting_logged = false;
    // The worker this launcher started, while it has not stopped.
    let mut child: Option<DynamicBackgroundWorker> = None;
    loop {
        if child.as_ref().is_some_and(|c| {
            matches!(
                c.pid(),
                Err(BackgroundWorkerStatus::Stopped | BackgroundWorkerStatus::PostmasterDied)
            )
        }) {
            child = None;
        }
        let found = crate::privilege::bounded_transaction(|| {
            let role = crate::read::one_with_args::<pg_sys::Oid>(
                "SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[WORKER_ROLE.into()],
            )?;
            // One left over by an earlier launcher (it was restarted) keeps running.
            let running = crate::read::one_with_args::<i64>(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = $1",
                &[WORKER_TYPE.into()],
            )?;
            Ok::<_, pgrx::spi::SpiError>((role, running.unwrap_or(0) > 0))
        });
        match found {
            Ok(Ok((Some(role), false))) if child.is_none() => {
                waiting_logged = false;
                // SAFETY: MyDatabaseId is set once connected.
                let db = unsafe { pg_sys::MyDatabaseId };
                match start_worker(db, role) {
                    Ok(started) => child = Some(started),
                    Err(e) => warning!("legacy_backup launcher: {e}"),
                }
            }
            Ok(Ok((None, _))) if !waiting_logged => {
                log!("legacy_backup launcher: waiting for role {WORKER_ROLE} (CREATE EXTENSION legacy_backup creates it)");
                waiting_logged = true;
            }
            Ok(Err(e)) => warning!("legacy_backup launcher: {e}"),
            Err(e) => warning!("legacy_backup launcher: {e}"),
            _ => {}
        }
        if !BackgroundWorker::wait_latch(Some(LAUNCHER_NAP)) || shutdown_requested() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            reload_settings();
        }
    }
}

/// Starts the worker for database `db` as `role`. It is never restarted by the postmaster: the
/// launcher starts the next one, so there is never more than one.
fn start_worker(db: pg_sys::Oid, role: pg_sys::Oid) -> Result<DynamicBackgroundWorker, String> {
    BackgroundWorkerBuilder::new(WORKER_TYPE)
        .set_type(WORKER_TYPE)
        .set_library("legacy_backup")
        .set_function("legacy_backup_worker_main")
        .enable_spi_access()
        .set_extra(&format!("{}:{}", u32::from(db), u32::from(role)))
        .set_restart_time(None)
        // SAFETY: this process's pid; the postmaster sets our latch when the worker stops.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .map_err(|e| {
            format!("could not start the worker ({e:?}); is max_worker_processes too low?")
        })
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn legacy_backup_worker_main(_arg: pg_sys::Datum) {
    die_on_sigterm();
    let Some((db, role)) = BackgroundWorker::get_extra()
        .split_once(':')
        .and_then(|(d, r)| Some((d.parse::<u32>().ok()?, r.parse::<u32>().ok()?)))
    else {
        warning!(
            "legacy_backup worker: started without a database and role; the launcher starts it"
        );
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(db)),
        Some(pg_sys::Oid::from(role)),
    );
    // Before any statement: nothing the database's owner set or created may shape what the
    // worker's SQL means.
    crate::privilege::pin_worker_session();
    record_progress();
    let database = crate::guc::text(&crate::guc::DATABASE);
    let procno = my_proc_number();
    WORKER_PROCNO.get().store(procno + 1, Ordering::Release);
    log!("legacy_backup worker started (database \"{database}\", role {WORKER_ROLE})");

    let mut runner = jobs::Runner::new();
    loop {
        let more = runner.run_once();
        if shutdown_requested() {
            break;
        }
        let nap = if more {
            Duration::from_millis(0)
        } else {
            crate::guc::naptime()
        };
        if !BackgroundWorker::wait_latch(Some(nap.max(Duration::from_millis(1)))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            reload_settings();
            runner.reload();
        }
    }
    WORKER_PROCNO.get().store(0, Ordering::Release);
    log!("legacy_backup worker stopping");
}

/// A confirmed manual cleanup, handed to the short-lived request worker in its `bgw_extra`
/// (128 bytes, hence the short keys).
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CleanupRequest {
    #[serde(rename = "db")]
    pub database: u32,
    #[serde(rename = "s")]
    pub session_id: String,
    #[serde(rename = "a")]
    pub requested_by: String,
}

impl CleanupRequest {
    pub fn encode(&self) -> Result<String, String> {
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        if text.len() >= pg_sys::BGW_EXTRALEN as usize {
            return Err(format!(
                "session and actor ids are too long for a cleanup request ({} bytes encoded, at most {})",
                text.len(),
                pg_sys::BGW_EXTRALEN - 1
            ));
        }
        Ok(text)
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

/// Starts a short-lived worker that queues a confirmed manual cleanup in its own, committed
/// transaction and wakes the main worker: a SQL function cannot commit, and the main worker
/// could not see a job queued in the caller's still-open transaction.
pub fn request_manual_cleanup(
    database: pg_sys::Oid,
    session_id: &str,
    actor: &str,
) -> Result<(), String> {
    let extra = CleanupRequest {
        database: u32::from(database),
        session_id: session_id.to_string(),
        requested_by: actor.to_string(),
    }
    .encode()?;
    BackgroundWorkerBuilder::new("legacy_backup cleanup request")
        .set_type("legacy_backup cleanup request")
        .set_library("legacy_backup")
        .set_function("legacy_backup_request_main")
        .enable_spi_access()
        .set_extra(&extra)
        .set_restart_time(None)
        .load_dynamic()
        .map(|_| ())
        .map_err(|e| format!("could not start a background worker for the request ({e:?}); is max_worker_processes too low?"))
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn legacy_backup_request_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let request = match CleanupRequest::decode(BackgroundWorker::get_extra()) {
        Ok(request) => request,
        Err(e) => {
            warning!("legacy_backup cleanup request: malformed request: {e}");
            return;
        }
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(request.database)), None);
    crate::privilege::pin_worker_session();
    let (session, actor) = (request.session_id, request.requested_by);
    BackgroundWorker::transaction(move || {
        Spi::run_with_args(
            "INSERT INTO legacy_backup.jobs (kind, session_id, requested_by, manual) VALUES ('cleanup', $1, $2, true) \
             ON CONFLICT DO NOTHING",
            &[session.as_str().into(), actor.as_str().into()],
        )
        .expect("queueing the cleanup");
    });
    wake_now();
}

#[cfg(test)]
mod tests {
    use super::CleanupRequest;

    #[test]
    fn cleanup_requests_round_trip_and_long_ids_are_refused() {
        let request = CleanupRequest {
            database: 16384,
            session_id: "s-1".into(),
            requested_by: "u-partner".into(),
        };
        assert_eq!(
            CleanupRequest::decode(&request.encode().unwrap()).unwrap(),
            request
        );
        let long = CleanupRequest {
            database: 1,
            session_id: "s".repeat(64),
            requested_by: "u".repeat(64),
        };
        assert!(long.encode().unwrap_err().contains("too long"));
        assert!(CleanupRequest::decode("16384\ts\tu").is_err());
    }
}

//! Who the extension's statements run as. The threat model is in docs/security.md; in short:
//!
//! - The application's role owns its tables and may attach code to them (triggers, rules,
//!   defaults, index expressions, constraints, policies, casts and operators on its types). Every
//!   statement of the extension that WRITES an application table therefore runs as that table's
//!   owner inside a security-restricted operation (`as_owner_of`), the way PostgreSQL itself runs
//!   REFRESH MATERIALIZED VIEW: whatever the application attached runs with the application's
//!   rights, never the extension owner's, and cannot SET ROLE, create temporary objects or
//!   change session state on the way.
//! - Statements that READ application tables beside the extension's own data run as the
//!   extension's owner with `search_path = pg_catalog, pg_temp` and schema-qualified names, use
//!   only pg_catalog operators and never cast an application type (`format('%s', x)` reads an
//!   enum through its output function, which the application cannot replace).

use crate::error::{LbError, LbResult};
use pgrx::pg_sys;
use std::ffi::CString;

/// The owner of an application table in the extension's schema.
pub fn table_owner(table: &str) -> LbResult<pg_sys::Oid> {
    let relid = crate::attach::app_table_oid(table)?.ok_or_else(|| {
        LbError::internal(format!(
            "application table {table} does not exist in the extension's schema"
        ))
    })?;
    relation_owner(relid)
}

/// Restores the saved user and security context when dropped, also while a PostgreSQL error
/// unwinds through Rust (transaction abort would restore it too, but a caught error must not
/// leave us running as someone else).
struct SavedUser {
    user: pg_sys::Oid,
    context: i32,
}

impl Drop for SavedUser {
    fn drop(&mut self) {
        // SAFETY: puts back exactly what GetUserIdAndSecContext returned.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `f` as the owner of the application table `table`, in a security-restricted operation.
/// Every write to an application table goes through here.
pub fn as_owner_of<R>(table: &str, f: impl FnOnce() -> LbResult<R>) -> LbResult<R> {
    as_role(table_owner(table)?, f)
}

/// The owner of a relation, from the relation cache.
fn relation_owner(relid: pg_sys::Oid) -> LbResult<pg_sys::Oid> {
    // SAFETY: a relcache lookup, closed again before returning.
    unsafe {
        let rel = pg_sys::RelationIdGetRelation(relid);
        if rel.is_null() {
            return Err(LbError::internal(format!("relation {relid:?} vanished")));
        }
        let owner = (*(*rel).rd_rel).relowner;
        pg_sys::RelationClose(rel);
        Ok(owner)
    }
}

/// Runs `f` as `owner` in a security-restricted operation.
pub fn as_role<R>(owner: pg_sys::Oid, f: impl FnOnce() -> LbResult<R>) -> LbResult<R> {
    let mut saved = SavedUser {
        user: pg_sys::InvalidOid,
        context: 0,
    };
    // SAFETY: plain reads and writes of this backend's current user id and security context;
    // `saved` puts the old ones back when it is dropped.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved.user, &mut saved.context);
        let restricted =
            pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION;
        pg_sys::SetUserIdAndSecContext(owner, saved.context | restricted as i32);
    }
    f()
}

/// The role that owns the extension.
pub fn extension_owner() -> LbResult<pg_sys::Oid> {
    crate::read::one::<pg_sys::Oid>(
        "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'legacy_backup'",
    )?
    .ok_or_else(|| LbError::internal("extension legacy_backup is not installed"))
}

/// The authenticated database role (`session_user`): recorded beside every claimed actor.
pub fn session_role() -> String {
    // SAFETY: GetSessionUserId is valid in any backend with a session.
    let role = unsafe { pg_sys::GetSessionUserId() };
    SESSION_ROLE.with(|cached| {
        if let Some((oid, name)) = cached.borrow().as_ref() {
            if *oid == role {
                return name.clone();
            }
        }
        // SAFETY: GetUserNameFromId returns a palloc'd copy (noerr = true gives NULL for a
        // dropped role).
        let name = unsafe {
            let name = pg_sys::GetUserNameFromId(role, true);
            if name.is_null() {
                return String::from("?");
            }
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        };
        *cached.borrow_mut() = Some((role, name.clone()));
        name
    })
}

thread_local! {
    /// The session user's name by oid: the audit trail asks for it on every categorizing
    /// statement. It goes stale only if a superuser renames the role (ALTER ROLE … RENAME, from
    /// another session) while this one lasts; the role's name at login is what it then shows.
    static SESSION_ROLE: std::cell::RefCell<Option<(pg_sys::Oid, String)>> = const { std::cell::RefCell::new(None) };
}

/// The actor credited when the application names none: the database role as `pg:<role>`.
pub fn role_actor() -> String {
    format!("pg:{}", session_role())
}

/// Whether the authenticated role is a superuser or a member of legacy_backup_admin.
pub fn session_is_admin() -> LbResult<bool> {
    Ok(crate::read::one::<bool>(
        "SELECT r.rolsuper OR pg_catalog.pg_has_role(r.oid, 'legacy_backup_admin', 'MEMBER') \
         FROM pg_catalog.pg_roles r WHERE r.rolname = session_user",
    )?
    .unwrap_or(false))
}

/// Runs `f` (statements on application tables, as their owner) with the audit trail recording
/// its changes as `source` and credited to `actor`. Both settings are superuser-only, so they
/// are set here, before the switch to the application's role, and reset afterwards.
pub fn with_change_source<R>(
    source: &str,
    actor: &str,
    f: impl FnOnce() -> LbResult<R>,
) -> LbResult<R> {
    set_local("legacy_backup.actor", actor)?;
    with_source(source, || as_owner_of("extracted_documents", f))
}

/// Runs `f` with `legacy_backup.change_source` (superuser-only) set to `source`, set here, before
/// any switch to the application's role, and reset afterwards.
pub fn with_source<R>(source: &str, f: impl FnOnce() -> LbResult<R>) -> LbResult<R> {
    set_local("legacy_backup.change_source", source)?;
    let result = f();
    set_local("legacy_backup.change_source", "app")?;
    result
}

/// After undo or restore wrote documents (as their owner, so the application's BEFORE triggers
/// ran on the way): every row must hold exactly what was written. A trigger of the application
/// that changed or skipped a row would otherwise have its values logged as the undo or the
/// restore, in the actor's name.
pub fn verify_written(
    client: &mut pgrx::spi::SpiClient<'_>,
    what: &str,
    ids: &[String],
    categories: &[Option<String>],
    statuses: &[String],
) -> LbResult<()> {
    let query = crate::attach::sql(
        "SELECT count(*) FROM unnest($1::text[], $2::text[], $3::text[]) AS p(id, cat, status) \
         LEFT JOIN @extschema@.extracted_documents d ON d.id = p.id \
         WHERE d.id IS NULL OR d.category_id IS DISTINCT FROM p.cat \
            OR pg_catalog.format('%s', d.status) IS DISTINCT FROM p.status",
    )?;
    let differing = client
        .update(
            &query,
            None,
            &[
                ids.to_vec().into(),
                categories.to_vec().into(),
                statuses.to_vec().into(),
            ],
        )?
        .first()
        .get_one::<i64>()?
        .unwrap_or(0);
    if differing > 0 {
        return Err(LbError::new(
            pgrx::PgSqlErrorCode::ERRCODE_TRIGGERED_ACTION_EXCEPTION,
            format!("{what} refused: {differing} document(s) do not hold what the {what} wrote"),
        )
        .detail("A trigger on extracted_documents changed or skipped rows while they were written; its values would have been logged as this change.")
        .hint("Find the application's BEFORE UPDATE trigger on extracted_documents that rewrites category_id or status."));
    }
    Ok(())
}

fn set_local(name: &str, value: &str) -> LbResult<()> {
    set_option(
        name,
        value,
        pg_sys::GucSource::PGC_S_SESSION,
        pg_sys::GucAction::GUC_ACTION_LOCAL,
    )
}

/// The settings every statement run with more rights than the application's role is parsed and
/// run under. `search_path`: no name resolves into a schema the application can write (an
/// operator `public.~~(name, name)` is never a candidate). `row_security = off`: a policy that
/// would filter a read makes it fail (42501) instead of leaving rows out. The last two keep the
/// extension's SQL meaning what it says whatever the caller set (`\_` in a literal, `= NULL`).
pub const PINNED_SETTINGS: [(&str, &str); 5] = [
    ("search_path", "pg_catalog, pg_temp"),
    ("row_security", "off"),
    // `on` makes the planner fold CHECK constraints of the tables it reads, calling what they
    // call with the reader's rights; `partition` (the default) only looks at partitions.
    ("constraint_exclusion", "partition"),
    ("standard_conforming_strings", "on"),
    ("transform_null_equals", "off"),
];

/// What else the worker pins: the database's owner can `ALTER DATABASE … SET` any of these for
/// every session, the worker's included (read-only transactions would stop every upload).
const WORKER_SETTINGS: [(&str, &str); 10] = [
    ("default_transaction_read_only", "off"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_deferrable", "off"),
    ("statement_timeout", "0"), // armed per transaction by bounded_transaction
    ("idle_in_transaction_session_timeout", "0"),
    ("synchronous_commit", "on"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("bytea_output", "hex"),
    // The trail's idle check plans a few aggregate subqueries every naptime; JIT compiling them
    // (the default cost thresholds trip on a large log) took 0.3-0.6 s per cycle.
    ("jit", "off"),
];

/// Pins `PINNED_SETTINGS`, `WORKER_SETTINGS` and a lock wait bound for the whole life of the
/// worker process, before it runs any statement. Set with the override source, so nothing the
/// database's owner sets (`ALTER DATABASE … SET search_path`) replaces them; called again after
/// every reload.
pub fn pin_worker_session() {
    let lock_timeout = format!("{}ms", crate::guc::job_timeout().as_millis());
    for (name, value) in PINNED_SETTINGS
        .iter()
        .chain(WORKER_SETTINGS.iter())
        .copied()
        .chain([("lock_timeout", lock_timeout.as_str())])
    {
        set_option(
            name,
            value,
            pg_sys::GucSource::PGC_S_OVERRIDE,
            pg_sys::GucAction::GUC_ACTION_SET,
        )
        .expect("pinned values have no NUL");
    }
}

/// Sets `PINNED_SETTINGS` until the current function call ends (every SQL function of the
/// extension has a `SET` clause, whose nest level restores what was saved in it at its exit), or
/// the current transaction where there is none (the worker's). `attach::lock_app_tables`, which
/// every privileged read of application tables begins with, calls it, whatever settings the
/// caller's session chose; the caller's own settings are back once the call returns.
pub fn pin_for_this_call() {
    for (name, value) in PINNED_SETTINGS {
        set_option(
            name,
            value,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
        )
        .expect("pinned values have no NUL");
    }
}

/// Runs `f` in a transaction of its own whose every statement is bounded by
/// `legacy_backup.job_timeout`. An error (application code that raised, a timeout, a lock wait
/// that gave up) rolls the transaction back and is returned as its message: the worker goes on.
/// Interrupts other than the timeout (SIGTERM, postmaster death) still end the process.
pub fn bounded_transaction<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    // SAFETY: the transaction calls a background worker makes (pgrx's BackgroundWorker::transaction),
    // with the abort path PostgresMain takes after an error.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = with_statement_timeout(|| {
        caught(|| {
            let value = f();
            // SAFETY: ends the transaction begun above; commit-time code (deferred triggers)
            // runs here, under the same bound and the same catch.
            unsafe {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            value
        })
    });
    if outcome.is_err() {
        // SAFETY: the error was caught and flushed; this is PostgresMain's recovery.
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    outcome
}

/// Runs `f` in a subtransaction bounded by `legacy_backup.job_timeout`: what application code
/// fired by `f` did is rolled back with it if it raises or overruns, and the error comes back as
/// a message while the enclosing transaction goes on.
pub fn bounded_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    // SAFETY: the internal-subtransaction pattern of PL/Python and PL/Perl: memory context and
    // resource owner restored after release or rollback.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let outcome = with_statement_timeout(|| caught(f));
        if outcome.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        outcome
    }
}

/// `f`, with a PostgreSQL ERROR (or a Rust panic) turned into its message.
fn caught<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let f = std::panic::AssertUnwindSafe(f);
    pgrx::PgTryBuilder::new(std::panic::AssertUnwindSafe(move || Ok((f.0)())))
        .catch_others(|e| {
            Err(match e {
                pgrx::pg_sys::panic::CaughtError::PostgresError(r)
                | pgrx::pg_sys::panic::CaughtError::ErrorReport(r)
                | pgrx::pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                    r.message().to_string()
                }
            })
        })
        .execute()
}

// utils/timeout.h, which pgrx does not bind. `STATEMENT_TIMEOUT` is the fourth `TimeoutId` in
// PostgreSQL 13 through 18.
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;
extern "C-unwind" {
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
    fn get_timeout_active(id: std::ffi::c_int) -> bool;
    fn get_timeout_indicator(id: std::ffi::c_int, reset_indicator: bool) -> bool;
}

/// Arms PostgreSQL's statement timeout (a background worker has no statement loop to do it) for
/// `f`, and disarms it after, so a timer that fires late cannot cancel the next statement. Nested
/// calls share the outermost deadline.
fn with_statement_timeout<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the timeout registered by InitPostgres for every backend, background workers
    // included; its handler raises the usual 57014 at the next interrupt check.
    if unsafe { get_timeout_active(STATEMENT_TIMEOUT) } {
        return f();
    }
    let ms = crate::guc::job_timeout()
        .as_millis()
        .clamp(1, i32::MAX as u128) as i32;
    // SAFETY: see above.
    unsafe { enable_timeout_after(STATEMENT_TIMEOUT, ms) };
    let result = f();
    // SAFETY: see above. A timer that fired after `f` returned left a cancel pending that no
    // statement consumed: dropped with it (the indicator is read before disarming resets it).
    unsafe {
        let fired_late = get_timeout_indicator(STATEMENT_TIMEOUT, false);
        disable_timeout(STATEMENT_TIMEOUT, false);
        if fired_late {
            pg_sys::QueryCancelPending = 0;
        }
    }
    result
}

/// Sets a setting with superuser context (the caller decided it may), as `source` and `action` say.
fn set_option(
    name: &str,
    value: &str,
    source: pg_sys::GucSource::Type,
    action: pg_sys::GucAction::Type,
) -> LbResult<()> {
    let (name, value) = (CString::new(name), CString::new(value));
    let (Ok(name), Ok(value)) = (name, value) else {
        return Err(LbError::invalid_parameter(
            "setting values may not contain NUL",
        ));
    };
    // SAFETY: set_config_option copies both strings.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            source,
            action,
            true,
            0,
            false,
        );
    }
    Ok(())
}

/// Refuses a function that writes when this server is a hot standby: PostgreSQL's read-only
/// SQLSTATE (25006), said plainly, before anything else runs (without it the first write fails
/// with an internal "cannot assign TransactionIds during recovery").
pub fn require_primary(function: &str) -> crate::error::LbResult<()> {
    // SAFETY: reads shared memory state; callable in any backend.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(crate::error::LbError::new(
            pgrx::PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("{function} cannot run on a standby"),
        )
        .detail("This server is a hot standby: it replays the primary's changes and accepts no writes. Health, readiness, history, legacy_categorization_at, legacy_snapshot, legacy_snapshot_fetch and the views work here.")
        .hint("Call it on the primary (after a failover, on the promoted server)."));
    }
    Ok(())
}

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

/// The role that owns the extension (for the DROP OWNED guard).
pub fn extension_owner() -> LbResult<pg_sys::Oid> {
    pgrx::Spi::get_one::<pg_sys::Oid>(
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
    Ok(pgrx::Spi::get_one::<bool>(
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
    let (name, value) = (CString::new(name), CString::new(value));
    let (Ok(name), Ok(value)) = (name, value) else {
        return Err(LbError::invalid_parameter(
            "setting values may not contain NUL",
        ));
    };
    // SAFETY: set_config_option copies both strings; GUC_ACTION_LOCAL ends with the transaction.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
    Ok(())
}

//! The partner check: postponement, restore, import and manual cleanup need an `actor_id` that is
//! an Active user whose role is one of `legacy_backup.partner_roles`. The application's claim,
//! not authentication (docs/security.md): the database role must hold the function's role too.

use crate::error::{LbError, LbResult};
use crate::ids;
use pgrx::PgSqlErrorCode;

/// The actor must be an Active user whose role is one of `legacy_backup.partner_roles`
/// (default Partner, BusinessOwner: the application's own partner check).
pub fn require_partner(actor_id: &str) -> LbResult<()> {
    let actor = ids::validate_id("actor_id", Some(actor_id))?;
    let role = crate::read::one_with_args::<String>(
        &crate::attach::sql(
            "SELECT (SELECT pg_catalog.format('%s/%s', role, status) FROM @extschema@.users WHERE id = $1)",
        )?,
        &[actor.as_str().into()],
    )?;
    let partner_roles = crate::guc::partner_roles();
    match role.as_deref().and_then(|r| r.split_once('/')) {
        None => Err(LbError::not_found(format!(
            "user \"{actor}\" does not exist"
        ))),
        Some((role, "Active")) if partner_roles.iter().any(|p| p == role) => Ok(()),
        Some((role, status)) => Err(LbError::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("only an active partner may do this; user \"{actor}\" is {role}, {status}"),
        )
        .detail(format!(
            "Partner roles (legacy_backup.partner_roles): {}.",
            partner_roles.join(", ")
        ))),
    }
}

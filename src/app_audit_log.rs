//! Rows in the application's own audit log (`legacy_import_audit_logs`). Its id has no default
//! (the application generates ids), so every row gets `gen_random_uuid()::text`.
//!
//! Every row the extension writes goes through `write`: it runs as the log table's owner in a
//! security-restricted operation (`privilege::as_owner_of`), so the application's triggers,
//! defaults and index expressions on its table never run with the extension's rights, and it
//! adds `dbRole`, the authenticated database role, beside the claimed `user_id`.

use crate::attach::sql;
use crate::error::LbResult;
use crate::privilege;
use pgrx::spi::SpiClient;

/// Writes one audit row in the caller's transaction.
pub fn write(
    client: &mut SpiClient<'_>,
    session_id: &str,
    user_id: &str,
    action: &str,
    details: &serde_json::Value,
) -> LbResult<()> {
    let mut details = details.clone();
    if let Some(map) = details.as_object_mut() {
        map.insert("dbRole".into(), privilege::session_role().into());
    }
    let query = sql(
        "INSERT INTO @extschema@.legacy_import_audit_logs (id, session_id, user_id, action, details, \"timestamp\") \
         VALUES (pg_catalog.gen_random_uuid()::text, $1, $2, $3, $4::jsonb, pg_catalog.now())",
    )?;
    privilege::as_owner_of("legacy_import_audit_logs", || {
        client.update(
            &query,
            None,
            &[
                session_id.into(),
                user_id.into(),
                action.into(),
                details.to_string().as_str().into(),
            ],
        )?;
        Ok(())
    })
}

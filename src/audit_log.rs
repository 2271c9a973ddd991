//! Rows in the application's own audit log (`legacy_import_audit_logs`). Its id has no default
//! (the application generates ids), so every row gets `gen_random_uuid()::text`.

use pgrx::spi::{SpiClient, SpiResult};

/// Writes one audit row in the caller's transaction.
pub fn write(
    client: &mut SpiClient<'_>,
    session_id: &str,
    user_id: &str,
    action: &str,
    details: &serde_json::Value,
) -> SpiResult<()> {
    client.update(
        "INSERT INTO legacy_import_audit_logs (id, session_id, user_id, action, details, \"timestamp\") \
         VALUES (gen_random_uuid()::text, $1, $2, $3, $4::jsonb, now())",
        None,
        &[session_id.into(), user_id.into(), action.into(), details.to_string().as_str().into()],
    )?;
    Ok(())
}

//! Settings (GUCs). Each one is documented in the README's settings table.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// `legacy_backup.actor`: the application user (users.id) behind the current transaction.
/// The application sets it with `SET LOCAL legacy_backup.actor = '<user id>'`.
pub static ACTOR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn register() {
    GucRegistry::define_string_guc(
        c"legacy_backup.actor",
        c"Application user id credited with changes made in this transaction.",
        c"Set with SET LOCAL by the application; snapshots and the audit trail record it.",
        &ACTOR,
        GucContext::Userset,
        GucFlags::default(),
    );
}

//! legacy_backup: protects categorization work held in PostgreSQL rows.
//!
//! Rooms, by concern:
//! - `api`: the SQL API, thin `#[pg_extern]` functions;
//! - `attach`: attaching to the application's tables (columns, triggers, baseline), and the
//!   checks that they are as the extension needs them;
//! - `audit_trail`: the trail's UPDATE triggers (a filtered row trigger and a statement flush);
//!   the log table, its INSERT/DELETE triggers and the SQL functions reading it are in
//!   sql/audit_trail.sql;
//! - `undo`: undo of recent changes, driven by the audit trail;
//! - `app_audit_log`: writes rows of the application's own audit log (legacy_import_audit_logs);
//! - `health`: whether protection is active (`legacy_backup_health`);
//! - `partner`: the partner check of postponement, restore, import and manual cleanup;
//! - `privilege`: who each statement runs as (the application's tables are written as their owner);
//! - `gate`: the export gate's verdict and cleanup postponement (the trigger is in sql/gate.sql);
//! - `guard`: the DROP EXTENSION guard (an event trigger; sql/guard.sql);
//! - `cleanup`: the partner's manual cleanup (preview, confirmation, hand-over to the worker);
//! - `snapshot`: building and storing snapshots (`snapshot::format` is pure Rust);
//! - `ids`: id validation and object-key naming (pure Rust);
//! - `recovery`: verify, fetch, restore and import of snapshots;
//! - `storage`: the object-storage (R2/S3) client (pure Rust);
//! - `worker`: the background worker and its jobs (upload, cleanup, prune);
//! - `error`: the error type carrying SQLSTATE, DETAIL and HINT.

use pgrx::prelude::*;

pub mod api;
pub mod app_audit_log;
pub mod attach;
pub mod audit_trail;
pub mod backup;
pub mod cleanup;
pub mod direct_insert;
pub mod error;
pub mod gate;
pub mod guard;
pub mod guc;
pub mod health;
pub mod ids;
pub mod partner;
pub mod privilege;
pub mod read;
pub mod recovery;
pub mod snapshot;
pub mod storage;
pub mod undo;
pub mod worker;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!(
    "../sql/audit_trail.sql",
    name = "audit_trail",
    requires = ["bootstrap"]
);
extension_sql_file!("../sql/gate.sql", name = "gate", requires = ["bootstrap"]);
extension_sql_file!("../sql/guard.sql", name = "guard", requires = ["bootstrap"]);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    audit_trail::register_callbacks();
    direct_insert::register_callbacks();
    worker::init();
}

// In-database tests (`cargo pgrx test`).
#[cfg(feature = "pg_test")]
mod pg_tests;

/// Required by `cargo pgrx test`: settings for the temporary test cluster.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'legacy_backup'"]
    }
}

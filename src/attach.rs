//! Attaching to the application's tables: which ones the extension needs, what it adds to them,
//! and the health report. Attachment is derived from the catalog, never stored, so a pg_restore
//! (extension first, tables later) ends up attached without any flag to fix.

use crate::error::{LbError, LbResult};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Application tables the extension reads or writes, in the extension's schema.
pub const REQUIRED_TABLES: &[&str] = &[
    "legacy_import_sessions",
    "extracted_documents",
    "import_categories",
    "document_batches",
    "legacy_import_audit_logs",
    "users",
];

/// Columns the extension adds to `legacy_import_sessions` when an older database lacks them.
/// TIMESTAMPTZ(6) matches what Prisma generates in newer databases.
pub const SESSION_COLUMNS: &[(&str, &str)] =
    &[("last_snapshot_at", "timestamptz(6)"), ("cleanup_scheduled_at", "timestamptz(6)")];

/// The schema the extension was created in; application tables are looked up there.
pub fn extension_schema() -> LbResult<String> {
    Spi::get_one::<String>(
        "SELECT n.nspname::text FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'legacy_backup'",
    )?
    .ok_or_else(|| LbError::internal("extension legacy_backup is not installed in this database"))
}

/// Required tables that do not exist (as ordinary or partitioned tables) in the extension schema.
pub fn missing_tables() -> LbResult<Vec<String>> {
    let names: Vec<String> = REQUIRED_TABLES.iter().map(|s| s.to_string()).collect();
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT t.name FROM unnest($1::text[]) WITH ORDINALITY AS t(name, ord) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_extension e ON e.extname = 'legacy_backup' \
                 WHERE c.relnamespace = e.extnamespace AND c.relname = t.name AND c.relkind IN ('r', 'p')) \
             ORDER BY t.ord",
            None,
            &[names.into()],
        )?;
        let mut missing = Vec::new();
        for row in rows {
            if let Some(name) = row.get::<String>(1)? {
                missing.push(name);
            }
        }
        Ok(missing)
    })
}

fn session_column_missing(column: &str) -> LbResult<bool> {
    Ok(!Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_extension e ON e.extname = 'legacy_backup' \
             WHERE c.relnamespace = e.extnamespace AND c.relname = 'legacy_import_sessions' \
               AND a.attname = $1 AND a.attnum > 0 AND NOT a.attisdropped)",
        &[column.into()],
    )?
    .unwrap_or(false))
}

fn detached_error(missing: &[String]) -> LbError {
    LbError::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "legacy_backup is not attached to the application's tables",
    )
    .detail(format!("Missing: {}.", missing.join(", ")))
    .hint("Create or restore the application's tables in the extension's schema, then run SELECT * FROM legacy_backup_attach();")
}

/// Fails with a clear error unless every required table and added column is in place.
/// One catalog query: it runs on every API call.
pub fn ensure_attached() -> LbResult<()> {
    let tables: Vec<String> = REQUIRED_TABLES.iter().map(|s| s.to_string()).collect();
    let columns: Vec<String> = SESSION_COLUMNS.iter().map(|(c, _)| c.to_string()).collect();
    let missing = Spi::get_one_with_args::<Vec<String>>(
        "WITH ext AS (SELECT extnamespace FROM pg_catalog.pg_extension WHERE extname = 'legacy_backup') \
         SELECT array(SELECT t FROM unnest($1::text[]) t WHERE NOT EXISTS ( \
                  SELECT 1 FROM pg_catalog.pg_class c, ext WHERE c.relnamespace = ext.extnamespace \
                  AND c.relname = t AND c.relkind IN ('r', 'p')) \
                UNION ALL \
                SELECT 'legacy_import_sessions.' || col FROM unnest($2::text[]) col WHERE NOT EXISTS ( \
                  SELECT 1 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid, ext \
                  WHERE c.relnamespace = ext.extnamespace AND c.relname = 'legacy_import_sessions' \
                  AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped))",
        &[tables.into(), columns.into()],
    )?
    .unwrap_or_default();
    if missing.is_empty() { Ok(()) } else { Err(detached_error(&missing)) }
}

/// One step of attaching, as reported to the DBA.
pub struct AttachStep {
    pub step: &'static str,
    pub object: String,
    pub outcome: &'static str,
}

/// Attaches to the application's tables, idempotently. Errors, naming them, if tables are missing.
pub fn attach() -> LbResult<Vec<AttachStep>> {
    let missing = missing_tables()?;
    if !missing.is_empty() {
        return Err(LbError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("cannot attach: application tables missing: {}", missing.join(", ")),
        )
        .detail(format!("legacy_backup looks for them in schema {}.", extension_schema()?))
        .hint("Create or restore the application's tables first, then run legacy_backup_attach() again."));
    }
    let mut steps = Vec::new();
    for table in REQUIRED_TABLES {
        steps.push(AttachStep { step: "table", object: table.to_string(), outcome: "present" });
    }
    for (column, ty) in SESSION_COLUMNS {
        let outcome = if session_column_missing(column)? {
            // Names come from constants above, never from input.
            Spi::run(&format!("ALTER TABLE legacy_import_sessions ADD COLUMN IF NOT EXISTS {column} {ty}"))?;
            "added"
        } else {
            "present"
        };
        steps.push(AttachStep { step: "column", object: format!("legacy_import_sessions.{column}"), outcome });
    }
    Ok(steps)
}

/// Called at the end of CREATE EXTENSION: attach when the tables exist, else one WARNING naming
/// every missing table. (PostgreSQL raises client_min_messages to WARNING while an extension
/// script runs, so a NOTICE here would never reach the DBA.)
pub fn attach_on_create() -> LbResult<()> {
    let missing = missing_tables()?;
    if missing.is_empty() {
        attach()?;
    } else {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!("legacy_backup installed but not attached: missing tables {}", missing.join(", ")),
            "legacy_backup",
        )
        .set_detail("Snapshots and the other safeguards stay inactive until the tables exist.")
        .set_hint("Create or restore the application's tables, then run SELECT * FROM legacy_backup_attach(); (a pg_restore restores the added columns with the tables, so nothing else is needed).")
        .report(PgLogLevel::WARNING);
    }
    Ok(())
}

pub struct HealthCheck {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// What a DBA needs to know to trust that protection is active.
pub fn health() -> LbResult<Vec<HealthCheck>> {
    let mut checks = Vec::new();
    let schema = extension_schema()?;
    let missing = missing_tables()?;
    for table in REQUIRED_TABLES {
        let present = !missing.iter().any(|m| m == table);
        checks.push(HealthCheck {
            check: format!("table {table}"),
            ok: present,
            detail: if present { format!("found in schema {schema}") } else { format!("missing from schema {schema}") },
        });
    }
    if !missing.iter().any(|m| m == "legacy_import_sessions") {
        for (column, _) in SESSION_COLUMNS {
            let present = !session_column_missing(column)?;
            checks.push(HealthCheck {
                check: format!("column legacy_import_sessions.{column}"),
                ok: present,
                detail: if present { "present".into() } else { "missing: run legacy_backup_attach()".into() },
            });
        }
    }
    let pending = Spi::get_one::<i64>(
        "SELECT count(*) FROM legacy_backup.snapshots WHERE upload_state <> 'uploaded'",
    )?
    .unwrap_or(0);
    checks.push(HealthCheck {
        check: "snapshots awaiting upload".into(),
        ok: true,
        detail: format!("{pending} snapshot(s) not yet in object storage"),
    });
    let preloaded = Spi::get_one::<String>("SELECT current_setting('shared_preload_libraries')")?
        .unwrap_or_default()
        .split(',')
        .any(|lib| lib.trim().trim_matches('"') == "legacy_backup");
    checks.push(HealthCheck {
        check: "shared_preload_libraries".into(),
        ok: preloaded,
        detail: if preloaded {
            "legacy_backup is preloaded".into()
        } else {
            "legacy_backup is not in shared_preload_libraries: the background worker cannot run".into()
        },
    });
    Ok(checks)
}

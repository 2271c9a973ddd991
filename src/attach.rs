//! Attaching to the application's tables: which ones the extension needs, what it adds to them,
//! and the health report. Attachment is derived from the catalog, never stored, so a pg_restore
//! (extension first, tables later) ends up attached without any flag to fix.

use crate::error::{LbError, LbResult};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;
use std::ffi::CString;

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
pub const SESSION_COLUMNS: &[(&str, &str)] = &[
    ("last_snapshot_at", "timestamptz(6)"),
    ("cleanup_scheduled_at", "timestamptz(6)"),
];

thread_local! {
    /// (extension oid, its namespace oid), refreshed whenever the extension's oid changes.
    static EXTENSION_NAMESPACE: Cell<(pg_sys::Oid, pg_sys::Oid)> =
        const { Cell::new((pg_sys::InvalidOid, pg_sys::InvalidOid)) };
}

/// The namespace the extension was created in: application tables are looked up there.
/// Catalog lookups, not SPI: this runs on every API call.
fn extension_namespace() -> LbResult<pg_sys::Oid> {
    // SAFETY: a catalog lookup by name; missing_ok = true returns InvalidOid instead of raising.
    let ext = unsafe { pg_sys::get_extension_oid(c"legacy_backup".as_ptr(), true) };
    if ext == pg_sys::InvalidOid {
        return Err(LbError::internal(
            "extension legacy_backup is not installed in this database",
        ));
    }
    let (cached_ext, cached_nsp) = EXTENSION_NAMESPACE.with(Cell::get);
    if cached_ext == ext {
        return Ok(cached_nsp);
    }
    let nsp = Spi::get_one::<pg_sys::Oid>(
        "SELECT extnamespace FROM pg_catalog.pg_extension WHERE extname = 'legacy_backup'",
    )?
    .ok_or_else(|| LbError::internal("extension legacy_backup has no schema"))?;
    EXTENSION_NAMESPACE.with(|c| c.set((ext, nsp)));
    Ok(nsp)
}

/// The schema the extension was created in, by name (for messages).
pub fn extension_schema() -> LbResult<String> {
    let nsp = extension_namespace()?;
    // SAFETY: get_namespace_name returns a palloc'd copy, or NULL for a vanished namespace.
    let name = unsafe { pg_sys::get_namespace_name(nsp) };
    if name.is_null() {
        return Err(LbError::internal("the extension's schema no longer exists"));
    }
    // SAFETY: a valid NUL-terminated string from the catalog.
    Ok(unsafe { std::ffi::CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned())
}

/// The oid of an ordinary or partitioned table in the extension's schema, if it exists.
fn app_table(nsp: pg_sys::Oid, name: &str) -> Option<pg_sys::Oid> {
    let cname = CString::new(name).expect("table names have no NUL");
    // SAFETY: syscache lookups by name and oid; both return InvalidOid / '\0' when absent.
    unsafe {
        let relid = pg_sys::get_relname_relid(cname.as_ptr(), nsp);
        let kind = if relid == pg_sys::InvalidOid {
            0
        } else {
            pg_sys::get_rel_relkind(relid) as u8
        };
        (kind == pg_sys::RELKIND_RELATION || kind == pg_sys::RELKIND_PARTITIONED_TABLE)
            .then_some(relid)
    }
}

fn has_column(relid: pg_sys::Oid, column: &str) -> bool {
    let cname = CString::new(column).expect("column names have no NUL");
    // SAFETY: syscache lookup; InvalidAttrNumber (0) when the column is absent or dropped.
    unsafe { pg_sys::get_attnum(relid, cname.as_ptr()) != pg_sys::InvalidAttrNumber as i16 }
}

/// Required tables that do not exist (as ordinary or partitioned tables) in the extension schema.
pub fn missing_tables() -> LbResult<Vec<String>> {
    let nsp = extension_namespace()?;
    Ok(REQUIRED_TABLES
        .iter()
        .filter(|t| app_table(nsp, t).is_none())
        .map(|t| t.to_string())
        .collect())
}

/// `legacy_import_sessions` columns the extension uses that are missing (empty if the table is).
fn missing_session_columns() -> LbResult<Vec<&'static str>> {
    let nsp = extension_namespace()?;
    Ok(match app_table(nsp, "legacy_import_sessions") {
        Some(relid) => SESSION_COLUMNS
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| !has_column(relid, c))
            .collect(),
        None => Vec::new(),
    })
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
pub fn ensure_attached() -> LbResult<()> {
    let mut missing = missing_tables()?;
    missing.extend(
        missing_session_columns()?
            .iter()
            .map(|c| format!("legacy_import_sessions.{c}")),
    );
    if missing.is_empty() {
        Ok(())
    } else {
        Err(detached_error(&missing))
    }
}

/// Triggers the extension keeps on application tables: (name, timing and event, table, transition
/// tables and level, function). Ordinary triggers, so pg_dump carries them with the tables.
pub const TRIGGERS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "legacy_backup_log_update",
        "AFTER UPDATE",
        "extracted_documents",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT",
        "legacy_backup_log_update",
    ),
    (
        "legacy_backup_log_insert",
        "AFTER INSERT",
        "extracted_documents",
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
        "legacy_backup_log_insert",
    ),
    (
        "legacy_backup_log_delete",
        "AFTER DELETE",
        "extracted_documents",
        "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
        "legacy_backup_log_delete",
    ),
    (
        "legacy_backup_export_gate",
        "BEFORE UPDATE OF status, cleaned_up_at",
        "legacy_import_sessions",
        "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.cleaned_up_at IS DISTINCT FROM NEW.cleaned_up_at)",
        "legacy_backup_export_gate",
    ),
    (
        "legacy_backup_export_gate_insert",
        "BEFORE INSERT",
        "legacy_import_sessions",
        "FOR EACH ROW WHEN (NEW.status = 'Exported')",
        "legacy_backup_export_gate",
    ),
];

/// None when the trigger does not exist; Some(enabled) when it does.
fn trigger_state(table: &str, name: &str) -> LbResult<Option<bool>> {
    let nsp = extension_namespace()?;
    let Some(relid) = app_table(nsp, table) else {
        return Ok(None);
    };
    // (Spi::get_one errors on zero rows, so the query always returns one.)
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT (SELECT tgenabled <> 'D' FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2)",
        &[relid.into(), name.into()],
    )?)
}

fn trigger_exists(table: &str, name: &str) -> LbResult<bool> {
    Ok(trigger_state(table, name)? == Some(true))
}

/// Records the current state of every document that has no history yet, so the audit trail is
/// complete from the moment the extension attached. Returns how many documents it recorded.
fn record_baseline() -> LbResult<i64> {
    Ok(Spi::get_one::<i64>(
        "WITH inserted AS ( \
           INSERT INTO category_assignment_logs \
             (session_id, document_id, new_category_id, new_status, new_categorized_by, new_categorized_at, \
              changed_by, attribution, changed_at, source) \
           SELECT d.session_id, d.id, d.category_id, d.status::text, d.categorized_by, d.categorized_at, \
                  coalesce(d.categorized_by, 'pg:' || current_user), \
                  CASE WHEN d.categorized_by IS NOT NULL THEN 'categorized_by' ELSE 'db_user' END, \
                  clock_timestamp(), 'baseline' \
           FROM extracted_documents d \
           WHERE NOT EXISTS (SELECT 1 FROM category_assignment_logs l \
                             WHERE l.session_id = d.session_id AND l.document_id = d.id) \
           RETURNING 1) \
         SELECT count(*) FROM inserted",
    )?
    .unwrap_or(0))
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
        steps.push(AttachStep {
            step: "table",
            object: table.to_string(),
            outcome: "present",
        });
    }
    for (column, ty) in SESSION_COLUMNS {
        let outcome = if missing_session_columns()?.contains(column) {
            // Names come from constants above, never from input.
            Spi::run(&format!(
                "ALTER TABLE legacy_import_sessions ADD COLUMN IF NOT EXISTS {column} {ty}"
            ))?;
            "added"
        } else {
            "present"
        };
        steps.push(AttachStep {
            step: "column",
            object: format!("legacy_import_sessions.{column}"),
            outcome,
        });
    }
    for (name, event, table, level, function) in TRIGGERS {
        // Attaching always leaves the trigger enabled: a disabled one is what lost history looks like.
        let outcome = match trigger_state(table, name)? {
            Some(true) => "present",
            Some(false) => {
                Spi::run(&format!("ALTER TABLE {table} ENABLE TRIGGER {name}"))?;
                "enabled"
            }
            None => {
                Spi::run(&format!("CREATE TRIGGER {name} {event} ON {table} {level} EXECUTE FUNCTION {function}()"))?;
                "created"
            }
        };
        steps.push(AttachStep {
            step: "trigger",
            object: format!("{table}.{name}"),
            outcome,
        });
    }
    let recorded = record_baseline()?;
    steps.push(AttachStep {
        step: "baseline",
        object: "category_assignment_logs".into(),
        outcome: if recorded == 0 {
            "complete"
        } else {
            "recorded"
        },
    });
    if recorded > 0 {
        steps.last_mut().expect("just pushed").object =
            format!("category_assignment_logs ({recorded} documents)");
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
            detail: if present {
                format!("found in schema {schema}")
            } else {
                format!("missing from schema {schema}")
            },
        });
    }
    if !missing.iter().any(|m| m == "legacy_import_sessions") {
        let missing_columns = missing_session_columns()?;
        for (column, _) in SESSION_COLUMNS {
            let present = !missing_columns.contains(column);
            checks.push(HealthCheck {
                check: format!("column legacy_import_sessions.{column}"),
                ok: present,
                detail: if present {
                    "present".into()
                } else {
                    "missing: run legacy_backup_attach()".into()
                },
            });
        }
    }
    if missing.is_empty() {
        for (name, _, table, _, _) in TRIGGERS {
            let present = trigger_exists(table, name)?;
            checks.push(HealthCheck {
                check: format!("trigger {table}.{name}"),
                ok: present,
                detail: if present {
                    "enabled".into()
                } else {
                    "missing or disabled: run legacy_backup_attach()".into()
                },
            });
        }
    }
    // The event trigger can be disabled (ALTER EVENT TRIGGER … DISABLE); say so.
    let guard_enabled = Spi::get_one::<bool>(
        "SELECT count(*) = 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'legacy_backup_drop_guard' AND evtenabled <> 'D'",
    )?
    .unwrap_or(false);
    checks.push(HealthCheck {
        check: "drop guard".into(),
        ok: guard_enabled,
        detail: if guard_enabled {
            "DROP EXTENSION refused while snapshots or changes exist".into()
        } else {
            "event trigger legacy_backup_drop_guard missing or disabled: ALTER EVENT TRIGGER legacy_backup_drop_guard ENABLE".into()
        },
    });
    let pending = Spi::get_one::<i64>(
        "SELECT count(*) FROM legacy_backup.snapshots WHERE upload_state <> 'uploaded'",
    )?
    .unwrap_or(0);
    checks.push(HealthCheck {
        check: "snapshots awaiting upload".into(),
        ok: true,
        detail: format!("{pending} snapshot(s) not yet in object storage"),
    });
    let workers = Spi::get_one::<i64>(
        "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'legacy_backup worker'",
    )?
    .unwrap_or(0);
    let worker_db = crate::guc::text(&crate::guc::DATABASE);
    let this_db = Spi::get_one::<String>("SELECT current_database()::text")?.unwrap_or_default();
    checks.push(HealthCheck {
        check: "background worker".into(),
        ok: workers > 0 && worker_db == this_db,
        detail: match (workers > 0, worker_db == this_db) {
            (true, true) => "running".into(),
            (true, false) => format!(
                "running, but for database \"{worker_db}\" (legacy_backup.database), not this one"
            ),
            (false, _) => {
                "not running: add legacy_backup to shared_preload_libraries and restart".into()
            }
        },
    });
    let failed =
        Spi::get_one::<i64>("SELECT count(*) FROM legacy_backup.jobs WHERE state = 'failed'")?
            .unwrap_or(0);
    checks.push(HealthCheck {
        check: "failed jobs".into(),
        ok: failed == 0,
        detail: format!("{failed} failed job(s); see the legacy_backup_jobs view"),
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
            "legacy_backup is not in shared_preload_libraries: the background worker cannot run"
                .into()
        },
    });
    Ok(checks)
}

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
    let nsp = crate::read::one::<pg_sys::Oid>(
        "SELECT extnamespace FROM pg_catalog.pg_extension WHERE extname = 'legacy_backup'",
    )?
    .ok_or_else(|| LbError::internal("extension legacy_backup has no schema"))?;
    EXTENSION_NAMESPACE.with(|c| c.set((ext, nsp)));
    Ok(nsp)
}

/// The schema the extension was created in, by name (for messages).
pub fn extension_schema() -> LbResult<String> {
    extension_schema_name(extension_namespace()?)
}

/// The name of `nsp`, the extension's schema (however the caller found it).
pub fn extension_schema_name(nsp: pg_sys::Oid) -> LbResult<String> {
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

/// `query` with every `@extschema@.` replaced by the extension's schema, quoted. Queries name
/// application tables (and the audit trail) this way because the extension's functions run with
/// `search_path = pg_catalog, pg_temp`: nothing the application creates in its schema (an
/// operator, a function) can then capture a name in them.
pub fn sql(query: &str) -> LbResult<String> {
    let schema = pgrx::spi::quote_identifier(extension_schema()?);
    Ok(query.replace("@extschema@", &schema))
}

/// The oid of an application table in the extension's schema, if it exists.
pub fn app_table_oid(name: &str) -> LbResult<Option<pg_sys::Oid>> {
    Ok(app_table(extension_namespace()?, name))
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

/// The version of the extension's SQL objects in this database (during ALTER EXTENSION UPDATE,
/// the version being installed).
fn installed_version() -> LbResult<String> {
    crate::read::one::<String>(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'legacy_backup'",
    )?
    .ok_or_else(|| LbError::internal("extension legacy_backup is not installed"))
}

/// Whether the application's extracted_documents has `column` (its later columns are optional).
pub fn document_has_column(column: &str) -> LbResult<bool> {
    Ok(app_table_oid("extracted_documents")?.is_some_and(|relid| has_column(relid, column)))
}

/// The SQL type of a column of extracted_documents, schema-qualified (for a cast to it).
pub fn document_column_type(column: &str) -> LbResult<String> {
    let relid = app_table_oid("extracted_documents")?
        .ok_or_else(|| LbError::internal("extracted_documents does not exist"))?;
    crate::read::one_with_args::<String>(
        "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        &[relid.into(), column.into()],
    )?
    .ok_or_else(|| LbError::internal(format!("extracted_documents has no column {column}")))
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
pub fn missing_session_columns() -> LbResult<Vec<&'static str>> {
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
    let mut missing = lock_app_tables()?;
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

/// One of the extension's triggers: (name, timing and event, table, transition tables and level,
/// function).
pub type TriggerDef = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// Triggers the extension keeps on application tables. Ordinary triggers, so pg_dump carries
/// them with the tables.
pub const TRIGGERS: &[TriggerDef] = &[
    // The audit trail (src/audit_trail.rs): three row triggers whose WHEN clauses keep writes
    // that change neither category nor status (the AI pipeline's) from queueing anything, and
    // one statement trigger that writes what they buffered. The comparisons are pg_catalog's
    // (triggers are created with search_path = pg_catalog); the status enums are compared by
    // calling enum_eq/enum_ne, never through an operator, which a cast of the enum's owner
    // (`CREATE CAST (its_enum AS text) … AS IMPLICIT`) could turn into text = text.
    (
        "legacy_backup_log_update",
        "AFTER UPDATE",
        "extracted_documents",
        "FOR EACH ROW WHEN (OLD.category_id COLLATE \"C\" IS DISTINCT FROM NEW.category_id COLLATE \"C\" \
         OR (OLD.status IS NULL) <> (NEW.status IS NULL) OR pg_catalog.enum_ne(OLD.status, NEW.status))",
        "legacy_backup_log_change",
    ),
    (
        "legacy_backup_log_insert",
        "AFTER INSERT",
        "extracted_documents",
        "FOR EACH ROW WHEN (NEW.category_id IS NOT NULL OR NEW.status IS NULL OR pg_catalog.enum_ne(NEW.status, 'Uncategorized'))",
        "legacy_backup_log_change",
    ),
    (
        "legacy_backup_log_delete",
        "AFTER DELETE",
        "extracted_documents",
        "FOR EACH ROW",
        "legacy_backup_log_change",
    ),
    (
        "legacy_backup_log_flush",
        "AFTER INSERT OR DELETE OR UPDATE OF category_id, status",
        "extracted_documents",
        "FOR EACH STATEMENT",
        "legacy_backup_log_flush",
    ),
    // A document keeps its id and its session, whatever changed them (the statement or a
    // BEFORE trigger of the application: no column list).
    (
        "legacy_backup_document_id_guard",
        "AFTER UPDATE",
        "extracted_documents",
        "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.session_id IS DISTINCT FROM NEW.session_id)",
        "legacy_backup_id_guard",
    ),
    // Categories: created, renamed, merged, moved or deleted (sql/audit_trail.sql); the
    // application's counter updates do not qualify.
    (
        "legacy_backup_log_category",
        "AFTER INSERT OR DELETE",
        "import_categories",
        "FOR EACH ROW",
        "legacy_backup_log_category",
    ),
    (
        "legacy_backup_log_category_update",
        "AFTER UPDATE",
        "import_categories",
        "FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.merged_into IS DISTINCT FROM NEW.merged_into \
         OR OLD.session_id IS DISTINCT FROM NEW.session_id OR OLD.id IS DISTINCT FROM NEW.id)",
        "legacy_backup_log_category",
    ),
    (
        "legacy_backup_category_truncate_guard",
        "BEFORE TRUNCATE",
        "import_categories",
        "FOR EACH STATEMENT",
        "legacy_backup_truncate_guard",
    ),
    (
        "legacy_backup_truncate_guard",
        "BEFORE TRUNCATE",
        "extracted_documents",
        "FOR EACH STATEMENT",
        "legacy_backup_truncate_guard",
    ),
    (
        "legacy_backup_session_truncate_guard",
        "BEFORE TRUNCATE",
        "legacy_import_sessions",
        "FOR EACH STATEMENT",
        "legacy_backup_truncate_guard",
    ),
    (
        "legacy_backup_export_gate",
        "BEFORE UPDATE OF status, cleaned_up_at",
        "legacy_import_sessions",
        "FOR EACH ROW WHEN ((OLD.status IS NULL) <> (NEW.status IS NULL) OR pg_catalog.enum_ne(OLD.status, NEW.status) \
         OR OLD.cleaned_up_at IS DISTINCT FROM NEW.cleaned_up_at)",
        "legacy_backup_export_gate",
    ),
    (
        "legacy_backup_export_gate_insert",
        "BEFORE INSERT",
        "legacy_import_sessions",
        "FOR EACH ROW WHEN (pg_catalog.enum_eq(NEW.status, 'Exported'))",
        "legacy_backup_export_gate",
    ),
    // Deleting a session takes its final snapshot first, while its documents are still there
    // (the foreign keys' cascades run after the row is gone).
    (
        "legacy_backup_session_delete",
        "BEFORE DELETE",
        "legacy_import_sessions",
        "FOR EACH ROW",
        "legacy_backup_session_delete",
    ),
    // AFTER row triggers see the row as it is stored, after every BEFORE trigger (including the
    // application's, which may fire after the gate): they are the authority on exports and on
    // the cleanup schedule.
    (
        "legacy_backup_export_check",
        "AFTER UPDATE",
        "legacy_import_sessions",
        "FOR EACH ROW WHEN ((OLD.status IS NULL) <> (NEW.status IS NULL) OR pg_catalog.enum_ne(OLD.status, NEW.status) \
         OR OLD.cleaned_up_at IS DISTINCT FROM NEW.cleaned_up_at \
         OR OLD.cleanup_scheduled_at IS DISTINCT FROM NEW.cleanup_scheduled_at OR OLD.id IS DISTINCT FROM NEW.id)",
        "legacy_backup_export_check",
    ),
    (
        "legacy_backup_export_check_delete",
        "AFTER DELETE",
        "legacy_import_sessions",
        "FOR EACH ROW",
        "legacy_backup_export_check",
    ),
    (
        "legacy_backup_export_check_insert",
        "AFTER INSERT",
        "legacy_import_sessions",
        "FOR EACH ROW WHEN (pg_catalog.enum_eq(NEW.status, 'Exported') OR NEW.cleaned_up_at IS NOT NULL OR NEW.cleanup_scheduled_at IS NOT NULL)",
        "legacy_backup_export_check",
    ),
];

/// The audit trail's triggers before 0.4.0: statement triggers with transition tables, calling
/// PL/pgSQL functions of their own names.
const TRAIL_TRIGGERS_BEFORE_0_4: [TriggerDef; 3] = [
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
];

/// The triggers the installed SQL expects. PostgreSQL runs an older version's install script
/// (on the way to an update) with this library: before 0.4.0 the trail's triggers had another
/// shape, which the 0.4.0 update script replaces.
pub fn triggers_of_installed_version() -> LbResult<Vec<TriggerDef>> {
    let installed = installed_version()?;
    let before_0_4 = ["0.1.0", "0.2.0", "0.3.0"].contains(&installed.as_str());
    Ok(TRIGGERS
        .iter()
        .map(
            |t| match TRAIL_TRIGGERS_BEFORE_0_4.iter().find(|old| old.0 == t.0) {
                Some(old) if before_0_4 => *old,
                _ => *t,
            },
        )
        .collect())
}

/// The state of one of the extension's triggers on an application table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerState {
    /// Present, calling the extension's function, firing in normal operation ('O' or 'A').
    Intact,
    Missing,
    /// DISABLE, or ENABLE REPLICA (fires only when session_replication_role = replica).
    NotFiring(char),
    /// A trigger of that name calls another function.
    WrongFunction(String),
    /// It fires on other events, at another level, or without its transition tables.
    WrongEvents,
}

impl TriggerState {
    pub fn describe(&self) -> String {
        match self {
            TriggerState::Intact => "enabled".into(),
            TriggerState::Missing => "missing".into(),
            TriggerState::NotFiring('D') => "disabled".into(),
            TriggerState::NotFiring(_) => {
                "enabled for replication only (ENABLE REPLICA): it does not fire".into()
            }
            TriggerState::WrongFunction(f) => {
                format!("calls {f} instead of the extension's function")
            }
            TriggerState::WrongEvents => "fires on other events than the extension defined".into(),
        }
    }
}

const TRIGGER_STATE_QUERY: &str = "\
    SELECT t.tgenabled::text, t.tgfoid = p.oid, t.tgfoid::regprocedure::text, \
           t.tgtype::int4, t.tgoldtable IS NOT NULL, t.tgnewtable IS NOT NULL \
    FROM pg_catalog.pg_trigger t \
    LEFT JOIN pg_catalog.pg_proc p ON p.proname = $3 AND p.pronamespace = $4 AND p.pronargs = 0 \
    WHERE t.tgrelid = $1 AND t.tgname = $2";

/// pg_trigger's `tgtype` bits and transition tables for a definition of `TRIGGERS`.
fn expected_firing(event: &str, level: &str) -> (i32, bool, bool) {
    let mut bits = 0;
    if level.contains("FOR EACH ROW") {
        bits |= 1;
    }
    if event.starts_with("BEFORE") {
        bits |= 2;
    }
    for (word, bit) in [
        ("INSERT", 4),
        ("DELETE", 8),
        ("UPDATE", 16),
        ("TRUNCATE", 32),
    ] {
        if event.contains(word) {
            bits |= bit;
        }
    }
    (
        bits,
        level.contains("OLD TABLE"),
        level.contains("NEW TABLE"),
    )
}

/// The state of one of `TRIGGERS` on its table (None when the table is missing).
pub fn trigger_state(trigger: &TriggerDef) -> LbResult<Option<TriggerState>> {
    let (name, event, table, level, function) = *trigger;
    let expected = expected_firing(event, level);
    let nsp = extension_namespace()?;
    let Some(relid) = app_table(nsp, table) else {
        return Ok(None);
    };
    Spi::connect(|c| {
        let rows = c.select(
            TRIGGER_STATE_QUERY,
            None,
            &[relid.into(), name.into(), function.into(), nsp.into()],
        )?;
        if rows.is_empty() {
            return Ok(Some(TriggerState::Missing));
        }
        let row = rows.first();
        let enabled: String = row.get(1)?.unwrap_or_default();
        let ours: bool = row.get(2)?.unwrap_or(false);
        let actual: String = row.get(3)?.unwrap_or_default();
        let firing = (
            row.get::<i32>(4)?.unwrap_or(0),
            row.get::<bool>(5)?.unwrap_or(false),
            row.get::<bool>(6)?.unwrap_or(false),
        );
        Ok(Some(if !ours {
            TriggerState::WrongFunction(actual)
        } else if firing != expected {
            TriggerState::WrongEvents
        } else if enabled == "O" || enabled == "A" {
            TriggerState::Intact
        } else {
            TriggerState::NotFiring(enabled.chars().next().unwrap_or('D'))
        }))
    })
}

/// Every trigger of the extension that exists but does not do its job, as (table.trigger,
/// problem), plus triggers on application tables that call the extension's trigger functions
/// under another name (a renamed one). Missing triggers are not listed: attaching creates them.
pub fn tampered_triggers() -> LbResult<Vec<(String, String)>> {
    let mut problems = Vec::new();
    for trigger @ (name, _, table, _, _) in &triggers_of_installed_version()? {
        match trigger_state(trigger)? {
            None | Some(TriggerState::Intact) | Some(TriggerState::Missing) => {}
            Some(state) => problems.push((format!("{table}.{name}"), state.describe())),
        }
    }
    problems.extend(misplaced_triggers()?);
    problems.extend(structure_problems()?);
    Ok(problems)
}

/// Every trigger calling one of the extension's functions must be the one of that name on that
/// table: a renamed trigger, or a trigger left on a renamed (or moved) table, is not.
pub fn misplaced_triggers() -> LbResult<Vec<(String, String)>> {
    let names: Vec<&str> = TRIGGERS.iter().map(|t| t.0).collect();
    let tables: Vec<&str> = TRIGGERS.iter().map(|t| t.2).collect();
    let functions: Vec<&str> = TRIGGERS.iter().map(|t| t.4).collect();
    Spi::connect(|c| -> LbResult<Vec<(String, String)>> {
        let rows = c.select(
            "SELECT t.tgrelid::regclass::text || '.' || t.tgname, p.proname::text \
             FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
             JOIN pg_catalog.pg_class r ON r.oid = t.tgrelid \
             WHERE p.pronamespace = $1 AND p.proname = ANY($2) \
               AND NOT EXISTS (SELECT 1 FROM unnest($3::text[], $4::text[]) AS x(name, tab) \
                               WHERE x.name = t.tgname AND x.tab = r.relname AND r.relnamespace = $1)",
            None,
            &[
                extension_namespace()?.into(),
                functions.into(),
                names.into(),
                tables.into(),
            ],
        )?;
        let mut found = Vec::new();
        for row in rows {
            let trigger: String = row.get(1)?.unwrap_or_default();
            let function: String = row.get(2)?.unwrap_or_default();
            found.push((
                trigger,
                format!(
                    "calls the extension's {function}() under another name or on another table"
                ),
            ));
        }
        Ok(found)
    })
}

/// Columns the extension's SECURITY DEFINER code reads from application tables, with the kinds
/// of type they must keep: with these, every operator it applies is pg_catalog's own and no
/// cast the application defined can run. (`enum` values are only read through format().)
const COLUMN_KINDS: &[(&str, &str, &str)] = &[
    ("extracted_documents", "id", "text"),
    ("extracted_documents", "session_id", "text"),
    ("extracted_documents", "category_id", "text"),
    ("extracted_documents", "categorized_by", "text"),
    ("extracted_documents", "categorized_at", "timestamptz"),
    ("extracted_documents", "status", "enum"),
    ("extracted_documents", "created_at", "timestamptz"),
    ("legacy_import_sessions", "id", "text"),
    ("legacy_import_sessions", "status", "enum"),
    ("legacy_import_sessions", "exported_at", "timestamptz"),
    ("legacy_import_sessions", "cleaned_up_at", "timestamptz"),
    (
        "legacy_import_sessions",
        "cleanup_scheduled_at",
        "timestamptz",
    ),
    ("import_categories", "id", "text"),
    ("import_categories", "session_id", "text"),
    ("import_categories", "name", "text"),
    ("import_categories", "merged_into", "text"),
    ("users", "id", "text"),
];

/// What would let application-defined code into the extension's privileged reads, or changes
/// past the audit trail: a column above retyped, or missing from a table that carries the
/// extension's triggers (a column swapped in under its name); a table inheriting from (or
/// partition of) an application table (a read of the parent plans the child, its indexes and
/// constraints, and statement triggers do not fire for its rows); row-level security on one (a
/// policy must not decide what a snapshot holds); an index or statistics object on an
/// application table whose expressions call a
/// function or operator outside pg_catalog (the planner folds such expressions when it loads
/// them, with the rights of whoever plans a query on the table).
pub fn structure_problems() -> LbResult<Vec<(String, String)>> {
    let nsp = extension_namespace()?;
    let tables: Vec<&str> = COLUMN_KINDS.iter().map(|c| c.0).collect();
    let columns: Vec<&str> = COLUMN_KINDS.iter().map(|c| c.1).collect();
    let kinds: Vec<&str> = COLUMN_KINDS.iter().map(|c| c.2).collect();
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT r.relname || '.' || x.col, \
                    CASE WHEN a.attnum IS NULL THEN 'is missing: the extension reads it' \
                         ELSE 'has type ' || pg_catalog.format_type(a.atttypid, a.atttypmod) \
                              || ', not ' || x.kind || ': the extension reads it with its own rights' END \
             FROM unnest($2::text[], $3::text[], $4::text[]) AS x(tab, col, kind) \
             JOIN pg_catalog.pg_class r ON r.relname = x.tab AND r.relnamespace = $1 AND r.relkind IN ('r', 'p') \
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attname = x.col AND NOT a.attisdropped \
             LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE (a.attnum IS NULL \
                    AND x.col <> ALL ($6::text[]) \
                    AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg JOIN pg_catalog.pg_proc tp ON tp.oid = tg.tgfoid \
                                WHERE tg.tgrelid = r.oid AND tp.pronamespace = $1 AND pg_catalog.starts_with(tp.proname::pg_catalog.text, 'legacy_backup_'))) \
                OR (a.attnum IS NOT NULL AND NOT CASE x.kind \
                 WHEN 'text' THEN a.atttypid IN ('pg_catalog.text'::pg_catalog.regtype, 'pg_catalog.varchar'::pg_catalog.regtype) \
                 WHEN 'timestamptz' THEN a.atttypid IN ('pg_catalog.timestamptz'::pg_catalog.regtype, 'pg_catalog.timestamp'::pg_catalog.regtype) \
                 ELSE t.typtype = 'e' END) \
             UNION ALL \
             SELECT i.inhrelid::pg_catalog.regclass::text, 'inherits from ' || r.relname \
                    || ': a read of ' || r.relname || ' plans it too (its indexes and constraints with the reader''s rights), and changes made directly to it are not logged' \
             FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class r ON r.oid = i.inhparent \
             WHERE r.relnamespace = $1 AND r.relname = ANY($5) \
             UNION ALL \
             SELECT r.relname, 'has row-level security enabled: the extension reads it with row_security = off, so that no policy can hide rows from a snapshot or a verdict, and every such read is refused' \
             FROM pg_catalog.pg_class r \
             WHERE r.relnamespace = $1 AND r.relname = ANY($5) AND (r.relrowsecurity OR r.relforcerowsecurity) \
             UNION ALL \
             SELECT o.what || ' on ' || r.relname, 'calls ' || CASE d.refclassid \
                      WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN 'function ' || d.refobjid::pg_catalog.regprocedure::text \
                      ELSE 'operator ' || d.refobjid::pg_catalog.regoperator::text END \
                    || ', outside pg_catalog: the planner may run it with the rights of whoever plans a query on the table' \
             FROM (SELECT 'index ' || x.indexrelid::pg_catalog.regclass::text, x.indrelid, 'pg_catalog.pg_class'::pg_catalog.regclass, x.indexrelid \
                   FROM pg_catalog.pg_index x \
                   UNION ALL \
                   SELECT 'statistics ' || e.stxname, e.stxrelid, 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass, e.oid \
                   FROM pg_catalog.pg_statistic_ext e) AS o(what, relid, classid, objid) \
             JOIN pg_catalog.pg_class r ON r.oid = o.relid AND r.relnamespace = $1 AND r.relname = ANY($5) \
             JOIN pg_catalog.pg_depend d ON d.classid = o.classid AND d.objid = o.objid \
                  AND d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass) \
             WHERE coalesce((SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = d.refobjid), \
                            (SELECT op.oprnamespace FROM pg_catalog.pg_operator op WHERE d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND op.oid = d.refobjid)) \
                   <> 'pg_catalog'::pg_catalog.regnamespace \
             ORDER BY 1",
            None,
            &[
                nsp.into(),
                tables.into(),
                columns.into(),
                kinds.into(),
                REQUIRED_TABLES.to_vec().into(),
                // Columns attach adds itself are not "missing" before it runs.
                SESSION_COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>().into(),
            ],
        )?;
        let mut found = Vec::new();
        for row in rows {
            found.push((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
            ));
        }
        Ok(found)
    })
}

/// Takes ACCESS SHARE locks on the application's tables and checks, under the lock, that each
/// name still means an ordinary or partitioned table: the extension's privileged reads name them,
/// and a view put in a table's place would run its functions with the reader's rights. Returns
/// the tables that are missing.
pub fn lock_app_tables() -> LbResult<Vec<String>> {
    // What follows in this function call (or the worker's transaction) reads them pinned.
    crate::privilege::pin_for_this_call();
    let nsp = extension_namespace()?;
    let mut missing = Vec::new();
    for table in REQUIRED_TABLES {
        let cname = CString::new(*table).expect("table names have no NUL");
        // SAFETY: name lookups and a lock by oid; the lock is held to the end of the transaction.
        let relid = unsafe { pg_sys::get_relname_relid(cname.as_ptr(), nsp) };
        if relid == pg_sys::InvalidOid {
            missing.push(table.to_string());
            continue;
        }
        unsafe { pg_sys::LockRelationOid(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
        if app_table(nsp, table) != Some(relid) {
            return Err(LbError::new(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("{table} is not an ordinary table"),
            )
            .detail("legacy_backup reads the application's tables with its own rights, so it reads tables only, never views or other relations in their place.")
            .hint("Restore the application's table under that name."));
        }
    }
    if missing.is_empty() {
        if let Some((object, problem)) = structure_problems()?.into_iter().next() {
            return Err(LbError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("legacy_backup will not read the application's tables: {object} {problem}"),
            )
            .hint("See SELECT * FROM legacy_backup_trigger_problems(); and docs/security.md."));
        }
    }
    Ok(missing)
}

pub fn function_exists(function: &str) -> LbResult<bool> {
    Ok(crate::read::one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE proname = $1 AND pronamespace = $2 AND pronargs = 0)",
        &[function.into(), extension_namespace()?.into()],
    )?
    .unwrap_or(false))
}

/// Records the current state of every document that has no history yet, so the audit trail is
/// complete from the moment the extension attached. Returns how many documents it recorded.
fn record_baseline() -> LbResult<i64> {
    // A 0.1.0/0.2.0 install script calls this library's attach before its log has db_role.
    let with_role = app_table(extension_namespace()?, "category_assignment_logs")
        .is_some_and(|log| has_column(log, "db_role"));
    let (role_column, role_value) = if with_role {
        (", db_role", ", session_user")
    } else {
        ("", "")
    };
    // A write: pgrx's get_one runs it as one (and gives the transaction its xid first).
    Ok(Spi::get_one_with_args::<i64>(
        &sql(&format!("WITH inserted AS ( \
           INSERT INTO @extschema@.category_assignment_logs \
             (session_id, document_id, new_category_id, new_status, new_categorized_by, new_categorized_at, \
              changed_by, attribution, changed_at, source{role_column}) \
           SELECT d.session_id, d.id, d.category_id, pg_catalog.format('%s', d.status), d.categorized_by, d.categorized_at, \
                  coalesce(d.categorized_by, $1), \
                  CASE WHEN d.categorized_by IS NOT NULL THEN 'categorized_by' ELSE 'db_user' END, \
                  pg_catalog.clock_timestamp(), 'baseline'{role_value} \
           FROM @extschema@.extracted_documents d \
           WHERE NOT EXISTS (SELECT 1 FROM @extschema@.category_assignment_logs l \
                             WHERE l.session_id = d.session_id AND l.document_id = d.id) \
           RETURNING 1) \
         SELECT count(*) FROM inserted"))?,
        &[crate::privilege::role_actor().into()],
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
    // Also refuses while the tables are in a state the extension will not read them in.
    lock_app_tables()?;
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
            Spi::run(&sql(&format!(
                "ALTER TABLE @extschema@.legacy_import_sessions ADD COLUMN IF NOT EXISTS {column} {ty}"
            ))?)?;
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
    for trigger @ (name, event, table, level, function) in &triggers_of_installed_version()? {
        // Attaching always leaves the trigger enabled: a disabled one is what lost history looks like.
        let outcome = match trigger_state(trigger)? {
            Some(TriggerState::Intact) => "present",
            Some(TriggerState::NotFiring(_)) => {
                Spi::run(&sql(&format!("ALTER TABLE @extschema@.{table} ENABLE TRIGGER {name}"))?)?;
                "enabled"
            }
            Some(state @ (TriggerState::WrongFunction(_) | TriggerState::WrongEvents)) => {
                return Err(LbError::new(
                    PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                    format!("trigger {name} on {table} {}", state.describe()),
                )
                .hint(format!("Drop that trigger (SET legacy_backup.allow_drop = on; DROP TRIGGER {name} ON {table};), then attach again.")))
            }
            // An older version's install script calls this library's attach on the way to an
            // update: triggers whose function that version lacks come with the update.
            Some(TriggerState::Missing) | None if !function_exists(function)? => "skipped: its function arrives with ALTER EXTENSION legacy_backup UPDATE",
            Some(TriggerState::Missing) | None => {
                Spi::run(&sql(&format!(
                    "CREATE TRIGGER {name} {event} ON @extschema@.{table} {level} EXECUTE FUNCTION @extschema@.{function}()"
                ))?)?;
                "created"
            }
        };
        steps.push(AttachStep {
            step: "trigger",
            object: format!("{table}.{name}"),
            outcome,
        });
    }
    grant_worker_reads()?;
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

/// The worker (connected as `legacy_backup_worker`, no superuser) reads which sessions are
/// exported and due; it writes them only as their owner. (An older version's install script,
/// run on the way to an update, has no such role yet: its update script grants this.)
fn grant_worker_reads() -> LbResult<()> {
    let role_exists = crate::read::one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
        &[crate::worker::WORKER_ROLE.into()],
    )?
    .unwrap_or(false);
    if role_exists {
        let role = pgrx::spi::quote_identifier(crate::worker::WORKER_ROLE);
        Spi::run(&sql(&format!(
            "GRANT USAGE ON SCHEMA @extschema@ TO {role}"
        ))?)?;
        Spi::run(&sql(&format!(
            "GRANT SELECT ON @extschema@.legacy_import_sessions TO {role}"
        ))?)?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bits PostgreSQL stores in pg_trigger.tgtype (trigger.h: ROW 1, BEFORE 2, INSERT 4,
    /// DELETE 8, UPDATE 16, TRUNCATE 32) for each of the extension's triggers.
    #[test]
    fn expected_firing_matches_pg_trigger_bits() {
        let firing = |name: &str| {
            let t = TRIGGERS.iter().find(|t| t.0 == name).unwrap();
            expected_firing(t.1, t.3)
        };
        assert_eq!(firing("legacy_backup_log_update"), (17, false, false));
        assert_eq!(firing("legacy_backup_log_flush"), (28, false, false));
        assert_eq!(
            firing("legacy_backup_document_id_guard"),
            (17, false, false)
        );
        let old = |i: usize| {
            let (_, event, _, level, _) = TRAIL_TRIGGERS_BEFORE_0_4[i];
            expected_firing(event, level)
        };
        assert_eq!(old(0), (16, true, true));
        assert_eq!(old(1), (4, false, true));
        assert_eq!(old(2), (8, true, false));
        assert_eq!(firing("legacy_backup_log_insert"), (5, false, false));
        assert_eq!(firing("legacy_backup_log_delete"), (9, false, false));
        assert_eq!(firing("legacy_backup_truncate_guard"), (34, false, false));
        assert_eq!(
            firing("legacy_backup_session_truncate_guard"),
            (34, false, false)
        );
        assert_eq!(
            firing("legacy_backup_export_check_delete"),
            (9, false, false)
        );
        assert_eq!(firing("legacy_backup_export_gate"), (19, false, false));
        assert_eq!(
            firing("legacy_backup_export_gate_insert"),
            (7, false, false)
        );
        assert_eq!(firing("legacy_backup_export_check"), (17, false, false));
        assert_eq!(
            firing("legacy_backup_export_check_insert"),
            (5, false, false)
        );
        assert_eq!(firing("legacy_backup_session_delete"), (11, false, false));
    }
}

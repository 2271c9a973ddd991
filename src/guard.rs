//! The DROP EXTENSION guard. DROP EXTENSION drops the extension's member tables with it: every
//! snapshot and the whole audit trail. So does DROP SCHEMA … CASCADE of the schema the extension
//! was created in. An event trigger (sql/guard.sql) calls this before either statement; it is
//! refused while those tables hold data, unless a superuser confirms with
//! `SET legacy_backup.allow_drop = on`.
//!
//! Written in Rust because only C-level code can read which objects the statement names (the
//! parse tree); PL/pgSQL sees just the command tag.

use crate::error::LbError;
use crate::guc;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::ffi::CStr;

/// V1 calling-convention record for the C function below.
#[no_mangle]
pub extern "C" fn pg_finfo_legacy_backup_drop_guard() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `legacy_backup.drop_guard()`, an event_trigger function fired on ddl_command_start for
/// DROP EXTENSION and DROP SCHEMA.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn legacy_backup_drop_guard(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let context = unsafe { (*fcinfo).context };
    if !unsafe { pgrx::is_a(context, pg_sys::NodeTag::T_EventTriggerData) } {
        LbError::new(
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "legacy_backup.drop_guard() must be called as an event trigger",
        )
        .raise();
    }
    if guc::ALLOW_DROP.get() {
        return pg_sys::Datum::from(0);
    }
    let data = context as *mut pg_sys::EventTriggerData;
    if let Some(drop) = unsafe { DropRequest::from_parse_tree((*data).parsetree) } {
        if let Some(error) = refusal(&drop) {
            error.raise();
        }
    }
    pg_sys::Datum::from(0)
}

/// The extension's event triggers (sql/guard.sql), with what each protects, for health.
pub const EVENT_TRIGGERS: &[(&str, &str)] = &[
    (
        "legacy_backup_drop_guard",
        "DROP EXTENSION, DROP SCHEMA … CASCADE and DROP OWNED refused while snapshots or changes exist",
    ),
    (
        "legacy_backup_sql_drop_guard",
        "any other statement that would drop the snapshots, the audit trail or the extension's triggers is refused",
    ),
    (
        "legacy_backup_trigger_guard",
        "disabling, renaming or replacing the extension's triggers is refused",
    ),
];

/// A DROP statement that may take the extension with it.
enum DropRequest {
    Extension {
        names: Vec<String>,
    },
    SchemaCascade {
        names: Vec<String>,
    },
    /// DROP OWNED BY: the roles, resolved to oids.
    Owned {
        roles: Vec<pg_sys::Oid>,
    },
    /// ALTER TYPE … RENAME VALUE: the enum's name, and its schema when the statement gave one.
    EnumRename {
        schema: Option<String>,
        type_name: String,
    },
    /// ALTER SCHEMA … RENAME: the schema's current name.
    SchemaRename {
        name: String,
    },
}

impl DropRequest {
    unsafe fn from_parse_tree(node: *mut pg_sys::Node) -> Option<DropRequest> {
        if unsafe { pgrx::is_a(node, pg_sys::NodeTag::T_DropOwnedStmt) } {
            let stmt = unsafe { &*(node as *mut pg_sys::DropOwnedStmt) };
            return Some(DropRequest::Owned {
                roles: unsafe { role_list(stmt.roles) },
            });
        }
        if unsafe { pgrx::is_a(node, pg_sys::NodeTag::T_RenameStmt) } {
            let stmt = unsafe { &*(node as *mut pg_sys::RenameStmt) };
            if stmt.renameType != pg_sys::ObjectType::OBJECT_SCHEMA || stmt.subname.is_null() {
                return None;
            }
            let name = unsafe { CStr::from_ptr(stmt.subname) }
                .to_string_lossy()
                .into_owned();
            return Some(DropRequest::SchemaRename { name });
        }
        if unsafe { pgrx::is_a(node, pg_sys::NodeTag::T_AlterEnumStmt) } {
            let stmt = unsafe { &*(node as *mut pg_sys::AlterEnumStmt) };
            if stmt.oldVal.is_null() {
                return None; // ADD VALUE: existing rows keep their meaning
            }
            // The name as written: this function runs with its own search_path, so an
            // unqualified name cannot be resolved the way the statement resolves it.
            let mut names = unsafe { string_list(stmt.typeName) };
            let type_name = names.pop().unwrap_or_default();
            return Some(DropRequest::EnumRename {
                schema: names.pop(),
                type_name,
            });
        }
        if !unsafe { pgrx::is_a(node, pg_sys::NodeTag::T_DropStmt) } {
            return None;
        }
        let stmt = unsafe { &*(node as *mut pg_sys::DropStmt) };
        let names = unsafe { string_list(stmt.objects) };
        match stmt.removeType {
            pg_sys::ObjectType::OBJECT_EXTENSION => Some(DropRequest::Extension { names }),
            pg_sys::ObjectType::OBJECT_SCHEMA
                if stmt.behavior == pg_sys::DropBehavior::DROP_CASCADE =>
            {
                Some(DropRequest::SchemaCascade { names })
            }
            _ => None,
        }
    }
}

/// The names of a DROP EXTENSION / DROP SCHEMA object list (String nodes).
unsafe fn string_list(list: *mut pg_sys::List) -> Vec<String> {
    if list.is_null() {
        return Vec::new();
    }
    let cells = unsafe { std::slice::from_raw_parts((*list).elements, (*list).length as usize) };
    cells
        .iter()
        .filter_map(|cell| {
            let node = unsafe { cell.ptr_value } as *mut pg_sys::Node;
            unsafe { pgrx::is_a(node, pg_sys::NodeTag::T_String) }.then(|| {
                unsafe { CStr::from_ptr((*(node as *mut pg_sys::String)).sval) }
                    .to_string_lossy()
                    .into_owned()
            })
        })
        .collect()
}

/// The oids of a DROP OWNED role list (RoleSpec nodes); unknown roles are left out (the
/// statement itself reports them).
unsafe fn role_list(list: *mut pg_sys::List) -> Vec<pg_sys::Oid> {
    if list.is_null() {
        return Vec::new();
    }
    let cells = unsafe { std::slice::from_raw_parts((*list).elements, (*list).length as usize) };
    cells
        .iter()
        .map(|cell| unsafe {
            pg_sys::get_rolespec_oid(cell.ptr_value as *mut pg_sys::RoleSpec, true)
        })
        .filter(|oid| *oid != pg_sys::InvalidOid)
        .collect()
}

/// ALTER TYPE … RENAME VALUE on the enum of a status column the extension reads: renaming (or
/// swapping) labels changes every row's status with no row written, so no trigger sees it.
/// (SQLSTATE 55000: an LB code raised through SPI from Rust would reach the client as XX000.)
fn refuse_enum_rename(schema: Option<&str>, type_name: &str) {
    // Matched by name (and schema when given): an unrelated enum of the same name elsewhere is
    // refused too, which errs on the safe side.
    let guarded = crate::read::one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                        JOIN pg_catalog.pg_extension e ON e.extname = 'legacy_backup' AND c.relnamespace = e.extnamespace \
                        JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                        WHERE c.relname IN ('extracted_documents', 'legacy_import_sessions') AND a.attname = 'status' \
                          AND NOT a.attisdropped AND t.typname = $1 \
                          AND ($2::text IS NULL OR t.typnamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = $2)))",
        &[type_name.into(), schema.into()],
    );
    if guarded.ok().flatten() == Some(true) {
        LbError::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("refused: ALTER TYPE {type_name} RENAME VALUE: it is the status enum of legacy_backup's tables"),
        )
        .detail("Renaming a label changes the status of every row that has it, with no row written: the audit trail would not see it.")
        .hint("Add a new value instead (ALTER TYPE … ADD VALUE), or have a superuser confirm with SET legacy_backup.allow_drop = on.")
        .raise();
    }
}

/// The roles whose DROP OWNED would drop the extension: its owner, and the owners of the schemas
/// its objects live in (dropping such a schema drops the extension with it, CASCADE being what
/// DROP OWNED does). With the extension in the application's schema, that is the application's
/// role, or pg_database_owner.
fn holders_of_the_extension() -> Vec<pg_sys::Oid> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname = 'legacy_backup' \
                 UNION SELECT n.nspowner FROM pg_catalog.pg_namespace n, pg_catalog.pg_extension e \
                 WHERE e.extname = 'legacy_backup' AND n.oid IN (e.extnamespace, \
                       (SELECT l.oid FROM pg_catalog.pg_namespace l WHERE l.nspname = 'legacy_backup'))",
                None,
                &[],
            )?
            .map(|row| row.get::<pg_sys::Oid>(1))
            .collect::<Result<Vec<_>, _>>()
    })
    .map(|owners| owners.into_iter().flatten().collect())
    .unwrap_or_default()
}

/// The error to raise, or None when the statement does not reach the extension or there is
/// nothing to lose.
fn refusal(drop: &DropRequest) -> Option<LbError> {
    if let DropRequest::EnumRename { schema, type_name } = drop {
        refuse_enum_rename(schema.as_deref(), type_name);
        return None;
    }
    if let DropRequest::SchemaRename { name } = drop {
        // The extension's SQL functions and event triggers name its schema as it was at
        // CREATE EXTENSION: renamed, the guards would look for their helpers in a schema
        // anyone owning the database may create again, and could be switched off.
        let schema_name = crate::attach::extension_schema().ok()?;
        return (*name == schema_name).then(|| {
            LbError::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("refused: ALTER SCHEMA {} RENAME: legacy_backup is installed in it", quote_identifier(name)),
            )
            .detail("The extension's functions and guards name that schema; renamed, they would look for their helpers elsewhere.")
            .hint("Keep the schema's name, or have a superuser confirm with SET legacy_backup.allow_drop = on and reinstall the extension.")
        });
    }
    // Names in the parse tree are as PostgreSQL resolved them: unquoted, like the catalog's.
    let schema_name = crate::attach::extension_schema().ok()?;
    let schema = quote_identifier(&schema_name);
    let statement = match drop {
        DropRequest::Extension { names } if names.iter().any(|n| n == "legacy_backup") => {
            "DROP EXTENSION".to_string()
        }
        DropRequest::SchemaCascade { names } if names.contains(&schema_name) => {
            format!("DROP SCHEMA {schema} CASCADE")
        }
        DropRequest::Owned { roles }
            if holders_of_the_extension().iter().any(|h| roles.contains(h)) =>
        {
            "DROP OWNED BY the owner of the extension or of a schema holding it".to_string()
        }
        _ => return None,
    };
    let log = format!("{schema}.category_assignment_logs");
    // Counted as the extension's owner: whoever runs the statement (the application's role,
    // dropping what it owns) may not read the extension's tables. Only those are read.
    let owner = crate::privilege::extension_owner().ok()?;
    let counts = crate::privilege::as_role(owner, || {
        Ok(Spi::get_two::<i64, i64>(&format!(
            "SELECT (SELECT count(*) FROM legacy_backup.snapshots), (SELECT count(*) FROM {log} WHERE source <> 'baseline')"
        ))?)
    });
    let (snapshots, changes) = match counts {
        Ok((Some(s), Some(c))) => (s, c),
        // Tables already gone or unreadable: nothing this guard can protect.
        _ => return None,
    };
    if snapshots == 0 && changes == 0 {
        return None;
    }
    let message = match drop {
        DropRequest::Extension { .. } => {
            format!("cannot drop extension legacy_backup: it holds {snapshots} snapshot(s) and {changes} audit-trail change(s)")
        }
        DropRequest::SchemaCascade { .. } => format!(
            "cannot drop schema {schema} with CASCADE: it would drop extension legacy_backup, which holds {snapshots} snapshot(s) and {changes} audit-trail change(s)"
        ),
        DropRequest::EnumRename { .. } | DropRequest::SchemaRename { .. } => return None,
        DropRequest::Owned { .. } => format!(
            "cannot drop the objects owned by the owner of extension legacy_backup or of a schema holding it: the extension holds {snapshots} snapshot(s) and {changes} audit-trail change(s)"
        ),
    };
    Some(
        LbError::new(PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST, message)
            .detail(format!("{statement} drops legacy_backup.snapshots, legacy_backup.jobs and {log} with the extension."))
            .hint(format!(
                "Keep them first (pg_dump -t legacy_backup.snapshots -t {log}), then SET legacy_backup.allow_drop = on and drop again; ALTER EXTENSION legacy_backup UPDATE upgrades without dropping."
            )),
    )
}

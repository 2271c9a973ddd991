//! The DROP EXTENSION guard. DROP EXTENSION drops the extension's member tables with it: every
//! snapshot and the whole audit trail. An event trigger (sql/guard.sql) calls this before any
//! DROP EXTENSION; a drop of legacy_backup is refused while those tables hold data, unless a
//! superuser confirms with `SET legacy_backup.allow_drop = on`.
//!
//! Written in Rust because only C-level code can read which extension the statement names
//! (the parse tree); PL/pgSQL sees just the command tag.

use crate::error::LbError;
use crate::guc;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::ffi::CStr;

const EXTENSION: &CStr = c"legacy_backup";

/// V1 calling-convention record for the C function below.
#[no_mangle]
pub extern "C" fn pg_finfo_legacy_backup_drop_guard() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `legacy_backup.drop_guard()`, an event_trigger function fired on ddl_command_start for
/// DROP EXTENSION.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn legacy_backup_drop_guard(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let context = unsafe { (*fcinfo).context };
    if !unsafe { pgrx::is_a(context, pg_sys::NodeTag::T_EventTriggerData) } {
        LbError::new(PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED, "legacy_backup.drop_guard() must be called as an event trigger").raise();
    }
    let data = context as *mut pg_sys::EventTriggerData;
    if unsafe { drops_this_extension((*data).parsetree) } && !guc::ALLOW_DROP.get() {
        if let Some(error) = refusal() {
            error.raise();
        }
    }
    pg_sys::Datum::from(0)
}

/// Whether the statement is a DROP EXTENSION naming legacy_backup.
unsafe fn drops_this_extension(node: *mut pg_sys::Node) -> bool {
    if !unsafe { pgrx::is_a(node, pg_sys::NodeTag::T_DropStmt) } {
        return false;
    }
    let stmt = node as *mut pg_sys::DropStmt;
    let objects = unsafe { (*stmt).objects };
    if unsafe { (*stmt).removeType } != pg_sys::ObjectType::OBJECT_EXTENSION || objects.is_null() {
        return false;
    }
    let cells = unsafe { std::slice::from_raw_parts((*objects).elements, (*objects).length as usize) };
    cells.iter().any(|cell| {
        let name = unsafe { cell.ptr_value } as *mut pg_sys::Node;
        unsafe { pgrx::is_a(name, pg_sys::NodeTag::T_String) && CStr::from_ptr((*(name as *mut pg_sys::String)).sval) == EXTENSION }
    })
}

/// The error to raise, or None when there is nothing to lose.
fn refusal() -> Option<LbError> {
    let schema = Spi::get_one::<String>("SELECT extnamespace::regnamespace::text FROM pg_catalog.pg_extension WHERE extname = 'legacy_backup'")
        .ok()
        .flatten()?;
    let log = format!("{}.category_assignment_logs", quote_identifier(&schema));
    let counts = Spi::get_two::<i64, i64>(&format!(
        "SELECT (SELECT count(*) FROM legacy_backup.snapshots), (SELECT count(*) FROM {log} WHERE source <> 'baseline')"
    ));
    let (snapshots, changes) = match counts {
        Ok((Some(s), Some(c))) => (s, c),
        // Tables already gone or unreadable: nothing this guard can protect.
        _ => return None,
    };
    if snapshots == 0 && changes == 0 {
        return None;
    }
    Some(
        LbError::new(
            PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            format!("cannot drop extension legacy_backup: it holds {snapshots} snapshot(s) and {changes} audit-trail change(s)"),
        )
        .detail(format!("DROP EXTENSION drops legacy_backup.snapshots, legacy_backup.jobs and {log} with it."))
        .hint(format!(
            "Keep them first (pg_dump -t legacy_backup.snapshots -t {log}), then SET legacy_backup.allow_drop = on and drop again; ALTER EXTENSION legacy_backup UPDATE upgrades without dropping."
        )),
    )
}

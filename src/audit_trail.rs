//! The audit trail's triggers: one log row per document whose category or status changed, and
//! per document inserted already categorized or skipped, and per deleted document.
//!
//! The application's AI pipeline updates `extracted_documents` all day (text, embeddings,
//! clusters, triage) without touching categorization. A statement trigger with transition tables
//! would copy every one of those rows, old and new, and run a query per statement. Instead:
//!
//! 1. Three row triggers call `legacy_backup_log_change`: on UPDATE with a `WHEN` comparing the
//!    category and status, on INSERT with a `WHEN` for documents that arrive categorized or
//!    skipped, on every DELETE. PostgreSQL evaluates the `WHEN` while it writes the row and
//!    queues nothing when it is false, so a pipeline write pays for one comparison. Otherwise
//!    this function copies what the log needs into a backend-local buffer (no query).
//! 2. `legacy_backup_log_flush`, a statement trigger `AFTER INSERT OR DELETE OR UPDATE OF
//!    category_id, status`, fires after every row trigger of its statement and writes the
//!    buffer with one prepared INSERT, as the log's owner: a bulk merge writes its thousands of
//!    rows in one statement.
//!
//! Nothing buffered can be lost or leak into another change: rows buffered inside a
//! subtransaction that aborts are dropped with it, a failed transaction drops everything, and a
//! transaction that tries to commit with rows still buffered (a BEFORE trigger changed a
//! category on an UPDATE that named neither column, so no flush fired) is refused (55000, see
//! `on_xact`).
//!
//! Attribution and source are decided here, per row, for every path (one home for the rule):
//! the actor is `legacy_backup.actor`; else, for an insert or an update, `categorized_by` when
//! the statement set it; else the database role as `pg:<session_user>`. The source is
//! `legacy_backup.change_source` (superuser-only), except that a change made by a trigger of the
//! application while undo or restore runs (trigger depth > 1) is an ordinary `app` change
//! without the partner's name.

use crate::error::{LbError, LbResult, OrRaise};
use crate::guc::{ChangeSource, CHANGE_SOURCE};
use pgrx::datum::DatumWithOid;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::cell::RefCell;
use std::collections::HashSet;
use std::convert::Infallible;
use std::ffi::CStr;

/// A change seen by the row trigger and not yet written.
struct PendingChange {
    subxact: pg_sys::SubTransactionId,
    session_id: String,
    document_id: String,
    old_category: Option<String>,
    new_category: Option<String>,
    /// None: the document did not exist before (INSERT) or no longer exists (DELETE).
    old_status: Option<String>,
    new_status: Option<String>,
    old_categorized_by: Option<String>,
    new_categorized_by: Option<String>,
    old_categorized_at: Option<TimestampWithTimeZone>,
    new_categorized_at: Option<TimestampWithTimeZone>,
    /// None: the database role (`pg:<session_user>`), filled in once per flush.
    changed_by: Option<String>,
    attribution: &'static str,
    source: &'static str,
}

/// Above this many buffered rows the row trigger writes them itself, so a huge UPDATE does not
/// hold them all in memory (row triggers run after the statement's last row is written).
const FLUSH_EVERY: usize = 10_000;

/// The columns the trail reads, by name; their attribute numbers are looked up once per batch.
const COLUMNS: [&CStr; 6] = [
    c"id",
    c"session_id",
    c"category_id",
    c"status",
    c"categorized_by",
    c"categorized_at",
];

struct Buffer {
    rows: Vec<PendingChange>,
    /// Attribute numbers of `COLUMNS` in the table the rows come from (valid while rows are
    /// buffered: the table is locked by the statement).
    attnums: [i16; 6],
    relid: pg_sys::Oid,
    /// Labels of the status enum seen in this batch, by the value's oid: a bulk merge reads the
    /// same two or three labels thousands of times.
    labels: Vec<(pg_sys::Datum, String)>,
}

impl Buffer {
    /// A status label through the enum's output function (what `format('%s', status)` gives).
    unsafe fn label(&mut self, row: SlotRow, tupdesc: pg_sys::TupleDesc, attnum: i16) -> String {
        let Some(value) = row.get(attnum) else {
            return String::new();
        };
        if let Some((_, label)) = self.labels.iter().find(|(v, _)| *v == value) {
            return label.clone();
        }
        let label = enum_label(value, pg_sys::SPI_gettypeid(tupdesc, attnum as i32));
        self.labels.push((value, label.clone()));
        label
    }
}

thread_local! {
    /// The documents undo or restore is writing right now: only their changes are recorded as
    /// the undo or restore (see `writing`).
    static WRITING: RefCell<Option<HashSet<String>>> = const { RefCell::new(None) };
    static BUFFER: RefCell<Buffer> = const { RefCell::new(Buffer { rows: Vec::new(), attnums: [0; 6], relid: pg_sys::InvalidOid, labels: Vec::new() }) };
    static STATEMENTS: RefCell<Option<Statements>> = const { RefCell::new(None) };
    static LOG_RELID: std::cell::Cell<pg_sys::Oid> = const { std::cell::Cell::new(pg_sys::InvalidOid) };
}

const PENDING_AT_COMMIT: &str =
    "legacy_backup: changed categories were not written to the audit trail";

/// Names every object with its schema: prepared once per backend, it must not depend on the
/// search_path of whoever fired the first trigger. Rows a single INSERT cannot take straight
/// into the table (`direct_insert`) come here too.
const INSERT_MANY_SQL: &str = "\
    INSERT INTO @extschema@.category_assignment_logs \
        (session_id, document_id, old_category_id, new_category_id, old_status, new_status, \
         old_categorized_by, new_categorized_by, old_categorized_at, new_categorized_at, \
         changed_by, attribution, source, db_role) \
    SELECT c.*, $2 FROM pg_catalog.unnest($1) AS c";

/// Row trigger (UPDATE, INSERT, DELETE): buffers one changed document (the `WHEN` clauses
/// already compared).
#[pg_trigger]
fn legacy_backup_log_change<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, Infallible> {
    buffer_row(trigger.trigger_data()).or_raise();
    Ok(None)
}

fn buffer_row(data: &pg_sys::TriggerData) -> LbResult<()> {
    // SAFETY: PostgreSQL hands a row-level trigger its slots (NULL where the event has none) and
    // the relation; the slots stay valid for the duration of the call.
    unsafe {
        let event = data.tg_event;
        let for_row = event & pg_sys::TRIGGER_EVENT_ROW != 0;
        let after = event & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_AFTER;
        let (old_slot, new_slot) = match event & pg_sys::TRIGGER_EVENT_OPMASK {
            pg_sys::TRIGGER_EVENT_INSERT => (std::ptr::null_mut(), data.tg_trigslot),
            pg_sys::TRIGGER_EVENT_UPDATE => (data.tg_trigslot, data.tg_newslot),
            pg_sys::TRIGGER_EVENT_DELETE => (data.tg_trigslot, std::ptr::null_mut()),
            _ => return Err(misuse("legacy_backup_log_change")),
        };
        if !(for_row && after) {
            return Err(misuse("legacy_backup_log_change"));
        }
        let rel = data.tg_relation;
        let relid = (*rel).rd_id;
        let tupdesc = (*rel).rd_att;
        let mut source = CHANGE_SOURCE.get();
        let mut actor = crate::guc::actor();
        // Depth is asked only when it can matter: an ordinary change is the app's at any depth.
        if source != ChangeSource::App && pg_trigger_depth() > 1 {
            source = ChangeSource::App;
            actor = None;
        }
        let buffered = BUFFER.with(|buffer| -> LbResult<usize> {
            let mut buffer = buffer.borrow_mut();
            if buffer.rows.is_empty() || buffer.relid != relid {
                if !buffer.rows.is_empty() {
                    return Err(misuse("legacy_backup_log_change"));
                }
                // The columns' positions, kept from the last statement while they still name
                // the same columns (a check of six names, not a scan of the descriptor).
                if buffer.relid != relid || !attnums_match(tupdesc, &buffer.attnums) {
                    buffer.relid = relid;
                    buffer.attnums = attnums(tupdesc)?;
                    buffer.labels.clear();
                }
            }
            let [id, session, category, status, by, at] = buffer.attnums;
            // Each slot is deformed once, up to the last column read (not one walk per column).
            let last = buffer.attnums.iter().copied().max().unwrap_or(0);
            let old = SlotRow::read(old_slot, last);
            let new = SlotRow::read(new_slot, last);
            let row = if new.is_some() { new } else { old };
            let document_id = text(row, id).unwrap_or_default();
            // Undo and restore claim only the documents they write: a change the application
            // makes on the side (a CHECK constraint's function, at depth 0) is its own.
            if source != ChangeSource::App
                && !WRITING.with(|w| {
                    w.borrow()
                        .as_ref()
                        .is_some_and(|ids| ids.contains(&document_id))
                })
            {
                source = ChangeSource::App;
                actor = None;
            }
            let old_by = text(old, by);
            let new_by = text(new, by);
            let old_at = timestamp(old, at);
            let new_at = timestamp(new, at);
            // categorized_by counts when the statement set it: a new document's, or a changed
            // categorized_by or categorized_at. A merge that leaves it alone is never credited
            // to the original categorizer.
            let set_by_statement = new.is_some()
                && new_by.is_some()
                && (old.is_none() || new_by != old_by || new_at != old_at);
            let (changed_by, attribution) = match actor {
                Some(actor) => (Some(actor), "setting"),
                None if set_by_statement => (new_by.clone(), "categorized_by"),
                None => (None, "db_user"),
            };
            let old_status = old.map(|old| buffer.label(old, tupdesc, status));
            let new_status = new.map(|new| buffer.label(new, tupdesc, status));
            buffer.rows.push(PendingChange {
                subxact: pg_sys::GetCurrentSubTransactionId(),
                session_id: text(row, session).unwrap_or_default(),
                document_id,
                old_category: text(old, category),
                new_category: text(new, category),
                old_status,
                new_status,
                old_categorized_by: old_by,
                new_categorized_by: new_by,
                old_categorized_at: old_at,
                new_categorized_at: new_at,
                changed_by,
                attribution,
                source: source_name(source),
            });
            Ok(buffer.rows.len())
        })?;
        if buffered >= FLUSH_EVERY {
            flush(data)?;
        }
    }
    Ok(())
}

/// Runs `f` (undo's or restore's UPDATE) with `ids` as the documents it writes: their changes
/// are recorded with the source and actor undo or restore set; any other document's change
/// in the meantime is the application's.
pub fn writing<R>(ids: &[String], f: impl FnOnce() -> R) -> R {
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            WRITING.with(|w| *w.borrow_mut() = None);
        }
    }
    WRITING.with(|w| *w.borrow_mut() = Some(ids.iter().cloned().collect()));
    let _done = Done;
    f()
}

/// Statement trigger: writes what the row triggers of this statement buffered.
#[pg_trigger]
fn legacy_backup_log_flush<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, Infallible> {
    let data = trigger.trigger_data();
    if data.tg_event & pg_sys::TRIGGER_EVENT_ROW != 0 {
        misuse("legacy_backup_log_flush").raise();
    }
    if BUFFER.with(|b| !b.borrow().rows.is_empty()) {
        flush(data).or_raise();
    }
    Ok(None)
}

/// Writes every buffered row with one INSERT, as the owner of the log, in a security-restricted
/// operation. The trigger must be on the extension's extracted_documents, so no other table's
/// trigger can put rows into the trail (`log_table`). This runs once per categorizing
/// statement: nothing here queries the catalogs beyond their caches.
fn flush(data: &pg_sys::TriggerData) -> LbResult<()> {
    // Only rows buffered at this subtransaction level or inside it: a flush that runs in a
    // savepoint must not take rows of an outer level, or rolling the savepoint back would lose
    // them. Those stay for a flush at their level, or are refused at commit.
    // SAFETY: reads this backend's current subtransaction id.
    let level = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let rows = BUFFER.with(|b| {
        let mut buffer = b.borrow_mut();
        let (here, outer): (Vec<PendingChange>, Vec<PendingChange>) =
            std::mem::take(&mut buffer.rows)
                .into_iter()
                .partition(|r| r.subxact >= level);
        buffer.rows = outer;
        here
    });
    if rows.is_empty() {
        return Ok(());
    }
    let log = log_table(data)?;
    let db_role = crate::privilege::session_role();
    let role_actor = if rows.iter().any(|r| r.changed_by.is_none()) {
        format!("pg:{db_role}")
    } else {
        String::new()
    };
    crate::privilege::as_role(log.owner, || {
        if let [row] = rows.as_slice() {
            // One row (a categorization): straight into the table, no query to plan.
            use crate::direct_insert::{insert, Outcome, Value};
            let outcome = insert(
                log.relid,
                &[
                    (c"session_id", Value::Text(Some(&row.session_id))),
                    (c"document_id", Value::Text(Some(&row.document_id))),
                    (c"old_category_id", Value::Text(row.old_category.as_deref())),
                    (c"new_category_id", Value::Text(row.new_category.as_deref())),
                    (c"old_status", Value::Text(row.old_status.as_deref())),
                    (c"new_status", Value::Text(row.new_status.as_deref())),
                    (
                        c"old_categorized_by",
                        Value::Text(row.old_categorized_by.as_deref()),
                    ),
                    (
                        c"new_categorized_by",
                        Value::Text(row.new_categorized_by.as_deref()),
                    ),
                    (
                        c"old_categorized_at",
                        Value::Timestamp(row.old_categorized_at),
                    ),
                    (
                        c"new_categorized_at",
                        Value::Timestamp(row.new_categorized_at),
                    ),
                    (
                        c"changed_by",
                        Value::Text(Some(row.changed_by.as_deref().unwrap_or(&role_actor))),
                    ),
                    (c"attribution", Value::Text(Some(row.attribution))),
                    (c"source", Value::Text(Some(row.source))),
                    (c"db_role", Value::Text(Some(&db_role))),
                ],
            );
            if outcome == Outcome::Inserted {
                return Ok(());
            }
        }
        // The trigger function's schema, which log_table checked is the extension's.
        let schema = crate::attach::extension_schema_name(log.namespace)?;
        Spi::connect_mut(|client| -> LbResult<()> {
            STATEMENTS.with(|cell| -> LbResult<()> {
                let mut cached = cell.borrow_mut();
                if cached.as_ref().is_none_or(|s| s.schema != schema) {
                    *cached = Some(Statements::prepare(client, &schema)?);
                }
                let statements = cached.as_ref().expect("prepared above");
                // SAFETY: builds a palloc'd legacy_backup.log_change[] of the buffered rows.
                let changes = unsafe { change_array(&rows, &role_actor, statements.change_type) };
                let args = [changes, db_role.as_str().into()];
                client.update(&statements.many, None, &args)?;
                Ok(())
            })
        })
    })
}

/// The log table the trail writes, and its owner.
struct LogTable {
    namespace: pg_sys::Oid,
    relid: pg_sys::Oid,
    owner: pg_sys::Oid,
}

/// The extension's schema (its trigger function's) and the log table there, after checking
/// that the trigger is on the extension's extracted_documents: no other table's trigger can put
/// rows into the trail. The log's oid is kept per backend and checked against the relation
/// cache on every flush (a recreated or renamed table is looked up again).
fn log_table(data: &pg_sys::TriggerData) -> LbResult<LogTable> {
    // SAFETY: the trigger's open relation and its Trigger; syscache and relcache lookups by oid
    // and name, each relcache entry closed again.
    unsafe {
        let rel = data.tg_relation;
        let namespace = pg_sys::get_func_namespace((*data.tg_trigger).tgfoid);
        let name = CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr());
        if (*(*rel).rd_rel).relnamespace != namespace || name != c"extracted_documents" {
            return Err(misuse("legacy_backup_log_flush"));
        }
        let owner_if_log = |relid: pg_sys::Oid| {
            if relid == pg_sys::InvalidOid {
                return None;
            }
            let log = pg_sys::RelationIdGetRelation(relid);
            if log.is_null() {
                return None;
            }
            let class = &*(*log).rd_rel;
            let is_log = class.relnamespace == namespace
                && CStr::from_ptr(class.relname.data.as_ptr()) == c"category_assignment_logs";
            let owner = class.relowner;
            pg_sys::RelationClose(log);
            is_log.then_some(owner)
        };
        let cached = LOG_RELID.get();
        if let Some(owner) = owner_if_log(cached) {
            return Ok(LogTable {
                namespace,
                relid: cached,
                owner,
            });
        }
        let relid = pg_sys::get_relname_relid(c"category_assignment_logs".as_ptr(), namespace);
        let owner = owner_if_log(relid)
            .ok_or_else(|| LbError::internal("the audit trail's table is missing"))?;
        LOG_RELID.set(relid);
        Ok(LogTable {
            namespace,
            relid,
            owner,
        })
    }
}

/// The prepared INSERT, for the schema it was prepared in.
struct Statements {
    schema: String,
    many: OwnedPreparedStatement,
    /// legacy_backup.log_change
    change_type: pg_sys::Oid,
}

impl Statements {
    fn prepare(client: &mut pgrx::spi::SpiClient<'_>, schema: &str) -> LbResult<Self> {
        let quoted = pgrx::spi::quote_identifier(schema);
        let text = PgOid::from(pg_sys::TEXTOID);
        let change_type = client
            .select(
                "SELECT pg_catalog.to_regtype('legacy_backup.log_change')::pg_catalog.oid",
                None,
                &[],
            )?
            .first()
            .get_one::<pg_sys::Oid>()?
            .unwrap_or(pg_sys::InvalidOid);
        // SAFETY: a syscache lookup.
        let change_array_type = unsafe { pg_sys::get_array_type(change_type) };
        if change_type == pg_sys::InvalidOid || change_array_type == pg_sys::InvalidOid {
            return Err(LbError::internal(
                "type legacy_backup.log_change is missing",
            ));
        }
        let many_types = [PgOid::from(change_array_type), text];
        let many = client
            .prepare_mut(
                INSERT_MANY_SQL.replace("@extschema@", &quoted).as_str(),
                &many_types,
            )?
            .keep();
        Ok(Statements {
            schema: schema.to_string(),
            many,
            change_type,
        })
    }
}

/// The buffered rows as one legacy_backup.log_change[] argument: one composite per row, built
/// straight from the buffer (an array of composites unnests faster than one array per column).
unsafe fn change_array(
    rows: &[PendingChange],
    role_actor: &str,
    change_type: pg_sys::Oid,
) -> DatumWithOid<'static> {
    let tupdesc = pg_sys::lookup_rowtype_tupdesc(change_type, -1);
    let text = |value: Option<&str>| match value {
        Some(text) => (
            pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
                text.as_ptr().cast(),
                text.len() as i32,
            )),
            false,
        ),
        None => (pg_sys::Datum::from(0usize), true),
    };
    let time = |value: Option<TimestampWithTimeZone>| match value.and_then(|t| t.into_datum()) {
        Some(datum) => (datum, false),
        None => (pg_sys::Datum::from(0usize), true),
    };
    let mut elements: Vec<pg_sys::Datum> = rows
        .iter()
        .map(|r| {
            let fields = [
                text(Some(&r.session_id)),
                text(Some(&r.document_id)),
                text(r.old_category.as_deref()),
                text(r.new_category.as_deref()),
                text(r.old_status.as_deref()),
                text(r.new_status.as_deref()),
                text(r.old_categorized_by.as_deref()),
                text(r.new_categorized_by.as_deref()),
                time(r.old_categorized_at),
                time(r.new_categorized_at),
                text(Some(r.changed_by.as_deref().unwrap_or(role_actor))),
                text(Some(r.attribution)),
                text(Some(r.source)),
            ];
            let mut values = fields.map(|f| f.0);
            let mut nulls = fields.map(|f| f.1);
            let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            // heap_form_tuple stamps the composite's type and length into the header.
            pg_sys::Datum::from((*tuple).t_data)
        })
        .collect();
    pg_sys::DecrTupleDescRefCount(tupdesc);
    let mut dims = [elements.len() as i32];
    let mut lower_bounds = [1];
    let built = pg_sys::construct_md_array(
        elements.as_mut_ptr(),
        std::ptr::null_mut(),
        1,
        dims.as_mut_ptr(),
        lower_bounds.as_mut_ptr(),
        change_type,
        -1,
        false,
        pg_sys::TYPALIGN_DOUBLE as std::ffi::c_char,
    );
    DatumWithOid::new(
        pg_sys::Datum::from(built),
        pg_sys::get_array_type(change_type),
    )
}

fn source_name(source: ChangeSource) -> &'static str {
    match source {
        // Cleanup marks sessions, never documents: a document change under it is the app's.
        ChangeSource::App | ChangeSource::Cleanup => "app",
        ChangeSource::Undo => "undo",
        ChangeSource::Restore => "restore",
        ChangeSource::Baseline => "baseline",
    }
}

fn misuse(function: &str) -> LbError {
    LbError::new(
        PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
        format!("{function} may only be used by legacy_backup's own triggers on extracted_documents"),
    )
    .hint("legacy_backup_attach() creates its triggers; do not attach its functions to other tables or events.")
}

fn pg_trigger_depth() -> i32 {
    // SAFETY: pg_trigger_depth takes no arguments and reads a backend-local counter.
    unsafe { pgrx::fcinfo::direct_function_call::<i32>(pg_sys::pg_trigger_depth, &[]) }.unwrap_or(0)
}

/// Whether `attnums` still point at live columns of `COLUMNS`' names in `tupdesc` (read from
/// the descriptor, no copies).
unsafe fn attnums_match(tupdesc: pg_sys::TupleDesc, attnums: &[i16; 6]) -> bool {
    let tupdesc = pgrx::PgTupleDesc::from_pg_unchecked(tupdesc);
    attnums.iter().zip(COLUMNS).all(|(&attnum, name)| {
        attnum > 0
            && tupdesc.get(attnum as usize - 1).is_some_and(|attr| {
                !attr.attisdropped && CStr::from_ptr(attr.attname.data.as_ptr()) == name
            })
    })
}

/// Attribute numbers of `COLUMNS` in `tupdesc`.
unsafe fn attnums(tupdesc: pg_sys::TupleDesc) -> LbResult<[i16; 6]> {
    let mut found = [0i16; 6];
    for (slot, name) in found.iter_mut().zip(COLUMNS) {
        let attnum = pg_sys::SPI_fnumber(tupdesc, name.as_ptr());
        if attnum <= 0 {
            return Err(LbError::internal(format!(
                "extracted_documents has no column {}",
                name.to_string_lossy()
            )));
        }
        *slot = attnum as i16;
    }
    Ok(found)
}

/// The deformed columns of a trigger's slot.
#[derive(Clone, Copy)]
struct SlotRow {
    values: *const pg_sys::Datum,
    nulls: *const bool,
    valid: i16,
}

impl SlotRow {
    /// Deforms `slot` up to column `last` (None when the event has no such row: the other side
    /// of an INSERT or DELETE).
    unsafe fn read(slot: *mut pg_sys::TupleTableSlot, last: i16) -> Option<SlotRow> {
        if slot.is_null() {
            return None;
        }
        if (*slot).tts_nvalid < last {
            pg_sys::slot_getsomeattrs_int(slot, last as i32);
        }
        Some(SlotRow {
            values: (*slot).tts_values,
            nulls: (*slot).tts_isnull,
            valid: (*slot).tts_nvalid,
        })
    }

    /// Column `attnum`; None when NULL.
    unsafe fn get(self, attnum: i16) -> Option<pg_sys::Datum> {
        assert!(
            attnum >= 1 && attnum <= self.valid,
            "column {attnum} was not deformed"
        );
        let i = (attnum - 1) as usize;
        (!*self.nulls.add(i)).then(|| *self.values.add(i))
    }
}

unsafe fn text(row: Option<SlotRow>, attnum: i16) -> Option<String> {
    row?.get(attnum).and_then(|d| String::from_datum(d, false))
}

unsafe fn timestamp(row: Option<SlotRow>, attnum: i16) -> Option<TimestampWithTimeZone> {
    row?.get(attnum)
        .and_then(|d| TimestampWithTimeZone::from_datum(d, false))
}

/// An enum value's label through the type's output function.
unsafe fn enum_label(value: pg_sys::Datum, typid: pg_sys::Oid) -> String {
    let mut output = pg_sys::InvalidOid;
    let mut varlena = false;
    pg_sys::getTypeOutputInfo(typid, &mut output, &mut varlena);
    let label = pg_sys::OidOutputFunctionCall(output, value);
    CStr::from_ptr(label).to_string_lossy().into_owned()
}

/// Keeps the buffer in step with the transaction: rows buffered inside a subtransaction that
/// aborts go with it, an aborted transaction leaves nothing, and a commit with rows still
/// buffered is refused rather than losing them. Registered once, in `_PG_init`.
pub fn register_callbacks() {
    // SAFETY: registering static callbacks, once per backend.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT | pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE => {
            let pending = BUFFER.with(|b| b.borrow().rows.len());
            if pending > 0 {
                LbError::new(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, PENDING_AT_COMMIT)
                    .detail(format!("{pending} changed document(s) of extracted_documents were seen by the audit trail but no statement trigger wrote them: an UPDATE that named neither category_id nor status changed them (a BEFORE trigger?)."))
                    .hint("Name category_id or status in the UPDATE that changes them. The transaction is rolled back so that no change goes unlogged.")
                    .raise();
            }
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            BUFFER.with(|b| b.borrow_mut().rows.clear());
        }
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    aborted: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // Subtransaction ids grow: every row buffered since `aborted` began belongs to it or to
        // one of its children.
        BUFFER.with(|b| b.borrow_mut().rows.retain(|r| r.subxact < aborted));
    }
}

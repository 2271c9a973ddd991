//! Building a session's snapshot inside the database, and storing it.
//!
//! The whole snapshot is read by ONE statement (a cursor), so it sees one MVCC snapshot even when
//! the caller's transaction has already written: separate SPI queries would each take a fresh
//! snapshot under READ COMMITTED and could contradict each other. The small tables arrive as one
//! JSON header row; documents arrive as typed columns, are serialized by Rust into a reused staging
//! buffer, sorted by id on a small index, and written once into a palloc'd varlena that is returned
//! (json) or stored (bytea) without another copy. That is where the speed over `json_agg` comes
//! from.

pub mod format;

use crate::error::{LbError, LbResult};
use crate::ids;
use format::{DocumentRow, SessionMeta, SnapshotSummary, SnapshotWriter, Stats, Timestamp};
use pgrx::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::cell::RefCell;

/// Rows fetched per cursor round trip: bounds tuple memory for very large sessions.
const FETCH_BATCH: i64 = 5000;

/// Typical serialized size of one document, for reserving the output buffer up front.
const BYTES_PER_DOCUMENT_HINT: usize = 560;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

const SNAPSHOT_QUERY: &str = r#"
SELECT 0 AS kind, NULL::text AS id, NULL::text, NULL::text, NULL::text, NULL::text,
       NULL::text, NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::bool, NULL::text,
       NULL::text, NULL::timestamptz, NULL::text, NULL::text, NULL::text,
       json_build_object(
         'id', s.id, 'firmId', s.firm_id, 'pstFileName', s.pst_file_name, 'status', pg_catalog.format('%s', s.status),
         'totalDocuments', s.total_documents, 'categorizedCount', s.categorized_count,
         'skippedCount', s.skipped_count,
         'categories', COALESCE((
            SELECT json_agg(json_build_object('id', c.id, 'name', c.name, 'mergedInto', c.merged_into,
                                              'documentCount', c.document_count)
                            ORDER BY c.id COLLATE "C")
            FROM @extschema@.import_categories c WHERE c.session_id = s.id), '[]'::json),
         'batches', COALESCE((
            SELECT json_agg(json_build_object('id', b.id, 'monthYear', b.month_year,
                     'assignedTo', b.assigned_to,
                     'assignedToName', NULLIF(btrim(concat_ws(' ', u.first_name, u.last_name)), ''),
                     'documentCount', b.document_count, 'categorizedCount', b.categorized_count,
                     'skippedCount', b.skipped_count)
                   ORDER BY b.month_year COLLATE "C", b.id COLLATE "C")
            FROM @extschema@.document_batches b LEFT JOIN @extschema@.users u ON u.id = b.assigned_to
            WHERE b.session_id = s.id), '[]'::json),
         'visibility', pg_current_snapshot()::text,
         'documentRows', (SELECT count(*) FROM @extschema@.extracted_documents x WHERE x.session_id = s.id),
         'takenAtUs', (extract(epoch FROM clock_timestamp()) * 1000000)::int8
       )
FROM @extschema@.legacy_import_sessions s WHERE s.id = $1
UNION ALL
SELECT 1, d.id, d.file_name::text, d.file_extension::text, d.storage_path,
       d.folder_path, d.category_id, pg_catalog.format('%s', d.status), d.email_subject::text, d.email_sender::text,
       d.email_date, d.is_sent, d.batch_id, d.categorized_by, d.categorized_at,
       @skip_reason@, @validation_status@, @cluster_id@, NULL::json
FROM @extschema@.extracted_documents d WHERE d.session_id = $1
"#;

/// The snapshot query for this database: later columns the table lacks read as NULL, and their
/// presence is returned so the writer can leave their keys out.
fn snapshot_query() -> LbResult<(String, [bool; 3])> {
    let mut query = crate::attach::sql(SNAPSHOT_QUERY)?;
    let mut present = [false; 3];
    // The application's later columns (format 2), each read only where the table has it.
    for (i, later) in format::LATER_COLUMNS.iter().enumerate() {
        present[i] = crate::attach::document_has_column(later.column)?;
        let read = if present[i] { later.read } else { "NULL::text" };
        query = query.replace(&format!("@{}@", later.column), read);
    }
    Ok((query, present))
}

/// Column types the reader relies on, checked against each fetched batch.
const EXPECTED_TYPES: [pg_sys::Oid; 19] = [
    pg_sys::INT4OID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::BOOLOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::JSONOID,
];

fn unknown_session(session_id: &str) -> LbError {
    LbError::not_found(format!("import session \"{session_id}\" does not exist"))
        .hint("Check the id against legacy_import_sessions.id.")
}

/// Largest staging buffer kept between calls. Reusing it spares the page faults of a fresh
/// multi-megabyte allocation on every snapshot; bigger ones are released after use.
const KEEP_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// A snapshot is one bytea/json value: PostgreSQL's 1 GB limit, less the varlena header.
const MAX_SNAPSHOT_BYTES: usize = 0x3fff_ffff - pg_sys::VARHDRSZ;

thread_local! {
    static STAGED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A finished snapshot: a palloc'd varlena holding the JSON bytes, and what was counted.
pub struct BuiltSnapshot {
    pub datum: *mut pg_sys::varlena,
    pub summary: SnapshotSummary,
}

impl BuiltSnapshot {
    pub fn json_bytes(&self) -> &[u8] {
        // SAFETY: datum is the 4-byte-header varlena built by `build` and still allocated.
        unsafe {
            std::slice::from_raw_parts(
                pgrx::varlena::vardata_any(self.datum).cast::<u8>(),
                pgrx::varlena::varsize_any_exhdr(self.datum),
            )
        }
    }
}

/// Builds the snapshot of one session. Read-only; the caller validated the id and attachment.
/// It reads only application tables, so it reads them as their owner: whatever the planner
/// evaluates of theirs runs with the application's own rights. Enums are read through their
/// output function (no cast of the application's applies); row-level security does not filter
/// (`privilege::pin_for_this_call`: a policy makes the read fail); and the rows read must equal
/// the session's rows counted apart in the same statement.
/// `previous`: the chain link (`previous_sha256`) for a snapshot that is stored; the preview
/// (`legacy_snapshot`) is unlinked.
pub fn build(session_id: &str, previous: Option<String>) -> LbResult<BuiltSnapshot> {
    crate::privilege::pin_for_this_call();
    crate::privilege::as_owner_of("extracted_documents", || {
        build_as_owner(session_id, previous)
    })
}

/// The chain link: the sha256 of the session's newest snapshot in the extension's own record.
fn previous_sha256(session_id: &str) -> LbResult<Option<String>> {
    Ok(crate::read::one_with_args::<String>(
        "SELECT (SELECT sha256 FROM legacy_backup.snapshots WHERE session_id = $1 ORDER BY snapshot_at DESC, id DESC LIMIT 1)",
        &[session_id.into()],
    )?)
}

fn build_as_owner(session_id: &str, previous: Option<String>) -> LbResult<BuiltSnapshot> {
    let mut staged = STAGED.with(|o| std::mem::take(&mut *o.borrow_mut()));
    let result = Spi::connect(|client| {
        // Planned on every call, for this session id: a cached generic plan would guess the
        // size of "documents of some session" and can pick a scan of every session's rows.
        let (query, later_present) = snapshot_query()?;
        let mut cursor = client.try_open_cursor(&query, &[session_id.into()])?;
        let mut writer: Option<SnapshotWriter> = None;
        let mut scratch = Some(&mut staged);
        loop {
            let fetched = cursor.fetch(FETCH_BATCH)?.len();
            if fetched == 0 {
                break;
            }
            // SAFETY: SPI_tuptable is the table just fetched; it stays valid until freed below,
            // and the column types are checked before any datum is read.
            unsafe {
                let tt = pg_sys::SPI_tuptable;
                read_batch(tt, fetched, later_present, &mut scratch, &mut writer)?;
                pg_sys::SPI_freetuptable(tt);
            }
        }
        let mut writer = writer.ok_or_else(|| unknown_session(session_id))?;
        writer.check_complete().map_err(|why| {
            LbError::new(
                pgrx::PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                format!("snapshot of session \"{session_id}\" refused: {why}"),
            )
            .detail("The documents were read and counted by the same statement; they must agree.")
            .hint("Look for a rule, policy or view that changes what extracted_documents returns.")
        })?;
        writer.link_to(previous);
        let finished = writer.finish();
        let len = finished.len();
        if len > MAX_SNAPSHOT_BYTES {
            return Err(LbError::new(
                pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!("snapshot of session \"{session_id}\" would be {len} bytes"),
            )
            .detail("A snapshot is stored as one value, and PostgreSQL values are limited to 1 GB.")
            .hint("See docs/operations.md, Limits and memory."));
        }
        // SAFETY: SPI_palloc allocates in the caller's memory context, so the datum outlives SPI;
        // it raises ERROR rather than returning NULL. write_to fills exactly `len` bytes.
        let datum = unsafe {
            let total = len + pg_sys::VARHDRSZ;
            let ptr = pg_sys::SPI_palloc(total).cast::<pg_sys::varlena>();
            pgrx::varlena::set_varsize_4b(ptr, total as i32);
            let body =
                std::slice::from_raw_parts_mut(pgrx::varlena::vardata_any(ptr) as *mut u8, len);
            finished.write_to(body);
            ptr
        };
        Ok(BuiltSnapshot {
            datum,
            summary: finished.summary,
        })
    });
    if staged.capacity() <= KEEP_BUFFER_BYTES {
        STAGED.with(|o| *o.borrow_mut() = staged);
    }
    result
}

/// Feeds one fetched batch to the writer, creating it from the header row.
unsafe fn read_batch<'a>(
    tt: *mut pg_sys::SPITupleTable,
    rows: usize,
    later_present: [bool; 3],
    scratch: &mut Option<&'a mut Vec<u8>>,
    writer: &mut Option<SnapshotWriter<'a>>,
) -> LbResult<()> {
    let tupdesc = (*tt).tupdesc;
    let natts = (*tupdesc).natts as usize;
    if natts != EXPECTED_TYPES.len() {
        return Err(LbError::internal(format!(
            "snapshot query returned {natts} columns"
        )));
    }
    for (i, expected) in EXPECTED_TYPES.iter().enumerate() {
        let actual = pg_sys::SPI_gettypeid(tupdesc, (i + 1) as i32);
        if actual != *expected {
            return Err(LbError::internal(format!(
                "snapshot query column {} has type oid {actual:?}",
                i + 1
            )));
        }
    }
    let mut values = vec![pg_sys::Datum::from(0usize); natts];
    let mut nulls = vec![false; natts];
    for r in 0..rows {
        let tuple = *(*tt).vals.add(r);
        pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        let text = |i: usize| -> Option<&str> {
            if nulls[i] {
                None
            } else {
                <&str as FromDatum>::from_polymorphic_datum(values[i], false, pg_sys::TEXTOID)
            }
        };
        let ts = |i: usize| -> Option<Timestamp> {
            (!nulls[i]).then(|| timestamp_from_datum(values[i]))
        };
        let kind = values[0].value() as i32;
        if kind == 0 {
            let meta_json = if nulls[18] {
                None
            } else {
                <&str as FromDatum>::from_polymorphic_datum(values[18], false, pg_sys::JSONOID)
            };
            let meta: SessionMeta = serde_json::from_str(meta_json.unwrap_or("null"))
                .map_err(|e| LbError::internal(format!("snapshot header is malformed: {e}")))?;
            let staged = scratch
                .take()
                .ok_or_else(|| LbError::internal("snapshot header row seen twice"))?;
            // The session's own document count is only a claim, but a good size hint.
            staged.reserve(
                meta.total_documents.clamp(0, 1_000_000) as usize * BYTES_PER_DOCUMENT_HINT,
            );
            *writer = Some(SnapshotWriter::new(meta, staged));
            continue;
        }
        // The header row is the first branch of a non-parallel UNION ALL, so it comes first.
        let Some(w) = writer.as_mut() else {
            return Err(LbError::internal(
                "snapshot rows arrived before the session header",
            ));
        };
        let required = |i: usize| text(i).unwrap_or("");
        w.push_document(&DocumentRow {
            id: required(1),
            file_name: required(2),
            file_extension: required(3),
            storage_path: required(4),
            folder_path: required(5),
            category_id: text(6),
            status: required(7),
            email_subject: text(8),
            email_sender: text(9),
            email_date: ts(10),
            is_sent: !nulls[11] && values[11].value() != 0,
            batch_id: text(12),
            categorized_by: text(13),
            categorized_at: ts(14),
            skip_reason: later_present[0].then(|| text(15)),
            validation_status: later_present[1].then(|| text(16)),
            cluster_id: later_present[2].then(|| text(17)),
        });
    }
    Ok(())
}

fn timestamp_from_datum(datum: pg_sys::Datum) -> Timestamp {
    match datum.value() as i64 {
        i64::MAX => Timestamp::PosInfinity,
        i64::MIN => Timestamp::NegInfinity,
        pg_us => Timestamp::Micros(pg_us + PG_EPOCH_OFFSET_US),
    }
}

/// What `legacy_snapshot_take` returns to the caller.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TakenSnapshot {
    pub snapshot_id: String,
    pub snapshot_key: String,
    pub snapshot_at: String,
    pub sha256: String,
    /// The chain link: the sha256 of the session's previous snapshot.
    pub previous_sha256: Option<String>,
    pub bytes: i64,
    pub stats: Stats,
    pub consistency_issues: usize,
}

/// Who a snapshot is attributed to: the given user, else `legacy_backup.actor`, else the
/// database role as `pg:<role>`.
pub fn resolve_actor(actor_id: Option<&str>) -> LbResult<String> {
    if let Some(actor) = actor_id {
        let actor = ids::validate_id("actor_id", Some(actor))?;
        let exists = crate::read::one_with_args::<bool>(
            &crate::attach::sql("SELECT EXISTS (SELECT 1 FROM @extschema@.users WHERE id = $1)")?,
            &[actor.as_str().into()],
        )?
        .unwrap_or(false);
        if !exists {
            return Err(LbError::not_found(format!("user \"{actor}\" does not exist"))
                .hint("actor_id must be a users.id; pass NULL to attribute the action to legacy_backup.actor or the database role."));
        }
        return Ok(actor);
    }
    Ok(crate::guc::actor().unwrap_or_else(crate::privilege::role_actor))
}

/// Why a snapshot is taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Occasion {
    /// `legacy_snapshot_take`, `legacy_export_begin`.
    Requested,
    /// The session row is being deleted (its BEFORE DELETE trigger): the DELETE already holds the
    /// row exclusively, and the row must not be updated (PostgreSQL refuses a DELETE of a row its
    /// own BEFORE trigger changed).
    SessionDeleted,
}

/// Builds, stores and records a snapshot, all in the caller's transaction.
pub fn take(session_id: &str, actor: &str) -> LbResult<TakenSnapshot> {
    take_on(session_id, actor, Occasion::Requested)
}

/// Whether a session holds work a final snapshot must keep: any document or category (the
/// assistants' categories and statuses, and the validation, skip reasons and clusters the
/// snapshot carries too), or any logged change (documents deleted before the session).
/// Only a session that never got past its upload holds none.
fn holds_work(session_id: &str) -> LbResult<bool> {
    crate::privilege::pin_for_this_call();
    // Each table read as its owner (privilege::as_owner_of).
    for table in ["extracted_documents", "import_categories"] {
        let query = crate::attach::sql(&format!(
            "SELECT EXISTS (SELECT 1 FROM @extschema@.{table} t WHERE t.session_id = $1)"
        ))?;
        let found = crate::privilege::as_owner_of(table, || {
            Ok(crate::read::one_with_args::<bool>(
                &query,
                &[session_id.into()],
            )?)
        })?;
        if found == Some(true) {
            return Ok(true);
        }
    }
    let logged = crate::attach::sql(
        "SELECT EXISTS (SELECT 1 FROM @extschema@.category_assignment_logs l WHERE l.session_id = $1)",
    )?;
    Ok(crate::read::one_with_args::<bool>(&logged, &[session_id.into()])?.unwrap_or(false))
}

/// The final snapshot of a session being deleted, taken inside the deleting transaction when
/// the session holds any work (None otherwise). Uploaded and kept like any other.
pub fn take_final(session_id: &str, actor: &str) -> LbResult<Option<TakenSnapshot>> {
    if !holds_work(session_id)? {
        return Ok(None);
    }
    take_on(session_id, actor, Occasion::SessionDeleted).map(Some)
}

fn take_on(session_id: &str, actor: &str, occasion: Occasion) -> LbResult<TakenSnapshot> {
    // One snapshot of a session at a time, so each links to the one before (the row lock the
    // take's own UPDATE of the session takes anyway, taken first).
    if occasion == Occasion::Requested {
        let lock = crate::attach::sql(
            "SELECT 1 FROM @extschema@.legacy_import_sessions WHERE id = $1 FOR NO KEY UPDATE",
        )?;
        crate::privilege::as_owner_of("legacy_import_sessions", || {
            Spi::run_with_args(&lock, &[session_id.into()])?;
            Ok(())
        })?;
    }
    let built = build(session_id, previous_sha256(session_id)?)?;
    let json = built.json_bytes();
    let sha256 = hex::encode(Sha256::digest(json));
    let bytes = json.len() as i64;
    let summary = &built.summary;
    let stats_json = serde_json::to_string(&summary.stats).expect("stats serialize");
    let taken_at = chrono::DateTime::from_timestamp_micros(summary.taken_at_us)
        .ok_or_else(|| LbError::internal("clock out of range"))?;

    // Until ALTER EXTENSION … UPDATE to 0.6.0 the table has no column for the link (the
    // document carries it either way).
    let link_column = crate::read::one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'legacy_backup.snapshots'::pg_catalog.regclass \
         AND attname = 'previous_sha256' AND NOT attisdropped)",
    )?
    .unwrap_or(false);
    let insert = format!(
        "INSERT INTO legacy_backup.snapshots \
           (session_id, snapshot_key, snapshot_at, taken_by, format_version, body, sha256, bytes, stats, visibility{}) \
         VALUES ($1, $2, 'epoch'::timestamptz + $3::int8 * interval '1 microsecond', $4, $5, $6, $7, $8, $9::jsonb, $10::pg_snapshot{}) \
         ON CONFLICT (snapshot_key) DO NOTHING RETURNING id",
        if link_column { ", previous_sha256" } else { "" },
        if link_column { ", $11" } else { "" },
    );
    Spi::connect_mut(|client| {
        // Keys have millisecond resolution; two snapshots of one session in the same millisecond
        // get the next free millisecond in the key (snapshot_at keeps the true time).
        let mut key_at = taken_at;
        let mut inserted: Option<String> = None;
        for _ in 0..1000 {
            let key = ids::snapshot_key(session_id, key_at);
            let row = client.update(
                &insert,
                None,
                &[
                    session_id.into(),
                    key.as_str().into(),
                    summary.taken_at_us.into(),
                    actor.into(),
                    format::FORMAT_VERSION.into(),
                    // SAFETY: a complete 4-byte-header varlena, valid as bytea.
                    unsafe {
                        pgrx::datum::DatumWithOid::new(
                            pg_sys::Datum::from(built.datum),
                            pg_sys::BYTEAOID,
                        )
                    },
                    sha256.as_str().into(),
                    bytes.into(),
                    stats_json.as_str().into(),
                    summary.visibility.as_str().into(),
                    summary.previous_sha256.as_deref().into(),
                ][..if link_column { 11 } else { 10 }],
            )?;
            if !row.is_empty() {
                inserted = row.first().get_one::<String>()?;
                break;
            }
            key_at += chrono::Duration::milliseconds(1);
        }
        let snapshot_id = inserted
            .ok_or_else(|| LbError::internal("no free snapshot key after 1000 attempts"))?;
        let key = ids::snapshot_key(session_id, key_at);
        let taken = TakenSnapshot {
            snapshot_id,
            snapshot_key: key,
            snapshot_at: Timestamp::Micros(summary.taken_at_us).to_rfc3339(),
            sha256,
            previous_sha256: summary.previous_sha256.clone(),
            bytes,
            stats: summary.stats,
            consistency_issues: summary.inconsistencies,
        };
        let mut details = serde_json::to_value(&taken).expect("details serialize");
        if occasion == Occasion::SessionDeleted {
            details["occasion"] = "sessionDeleted".into();
        }
        crate::app_audit_log::write(
            client,
            session_id,
            actor,
            "CATEGORIZATION_SNAPSHOT",
            &details,
        )?;
        // Queued in the same transaction; the worker is woken when it commits.
        client.update(
            "INSERT INTO legacy_backup.jobs (kind, session_id, snapshot_id, requested_by) VALUES ('upload', $1, $2, $3)",
            None,
            &[session_id.into(), taken.snapshot_id.as_str().into(), actor.into()],
        )?;
        crate::worker::wake_at_commit();
        if occasion == Occasion::SessionDeleted {
            return Ok(taken);
        }
        let touch = crate::attach::sql(
            "UPDATE @extschema@.legacy_import_sessions SET last_snapshot_at = 'epoch'::timestamptz + $2::int8 * interval '1 microsecond', \
             updated_at = pg_catalog.now() WHERE id = $1",
        )?;
        crate::privilege::as_owner_of("legacy_import_sessions", || {
            client.update(
                &touch,
                None,
                &[session_id.into(), summary.taken_at_us.into()],
            )?;
            Ok(())
        })?;
        Ok(taken)
    })
}

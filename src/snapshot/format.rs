//! The snapshot document (format version 2): its parts, the counts recomputed from the document
//! rows, the consistency report, deterministic serialization, and the reader of every format a
//! restore accepts (`parse_snapshot`). Pure Rust, no Postgres calls.
//!
//! Format 2 differs from 1 in two places: `stats` leads with the application's own names
//! (`totalDocuments`, `categorizedCount`, `skippedCount`, `uncategorizedCount`, which its UI
//! reads) and keeps format 1's (`total`, `categorized`, `skipped`, `uncategorized`) after them;
//! and each document carries `skipReason`, `validationStatus` and `clusterId` when the
//! application's table has those columns (absent keys: the column does not exist).
//!
//! Layout of the JSON, keys in this order:
//! `formatVersion, sessionId, snapshotAt, firmId, pstFileName, status, documents, stats,
//! categories, batches, consistency`. Arrays are sorted: categories and documents by id
//! (bytewise), batches by monthYear then id. The header fields known up front come first, the
//! summaries counted from the documents last.

use crate::error::{LbError, LbResult};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use pgrx::PgSqlErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;

pub const FORMAT_VERSION: i32 = 3;

/// One of the application's later columns of `extracted_documents` that format 2 carries.
pub struct LaterColumn {
    /// The document's JSON key.
    pub key: &'static str,
    pub column: &'static str,
    /// How it is read as text from `extracted_documents d` (an enum through its output
    /// function, never a cast).
    pub read: &'static str,
}

/// The later columns, in the order `DocumentRow` and restore keep them.
pub const LATER_COLUMNS: [LaterColumn; 3] = [
    LaterColumn {
        key: "skipReason",
        column: "skip_reason",
        read: "d.skip_reason::text",
    },
    LaterColumn {
        key: "validationStatus",
        column: "validation_status",
        read: "CASE WHEN d.validation_status IS NULL THEN NULL ELSE pg_catalog.format('%s', d.validation_status) END",
    },
    LaterColumn {
        key: "clusterId",
        column: "cluster_id",
        read: "d.cluster_id::text",
    },
];

/// Session header plus the small tables, read by the same statement as the documents.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionMeta {
    pub id: String,
    pub firm_id: String,
    pub pst_file_name: String,
    pub status: String,
    pub total_documents: i64,
    pub categorized_count: i64,
    pub skipped_count: i64,
    pub categories: Vec<CategoryRow>,
    pub batches: Vec<BatchRow>,
    /// `pg_current_snapshot()` of the reading statement, stored with the snapshot so later checks
    /// can tell exactly which changes it holds.
    pub visibility: String,
    /// `clock_timestamp()` in microseconds since the Unix epoch.
    pub taken_at_us: i64,
    /// The session's rows in extracted_documents, counted apart by the same statement: the
    /// document rows read must be exactly these (`SnapshotWriter::check_complete`).
    pub document_rows: i64,
    /// The sha256 of the same session's previous snapshot (None for the first): the chain link,
    /// set by the caller from the extension's own record (`SnapshotWriter::link_to`).
    #[serde(skip)]
    pub previous_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CategoryRow {
    pub id: String,
    pub name: String,
    pub merged_into: Option<String>,
    pub document_count: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRow {
    pub id: String,
    pub month_year: String,
    pub assigned_to: Option<String>,
    pub assigned_to_name: Option<String>,
    pub document_count: i64,
    pub categorized_count: i64,
    pub skipped_count: i64,
}

/// One document as read from SPI, borrowing the tuple's memory.
#[derive(Debug, Clone, Copy)]
pub struct DocumentRow<'a> {
    pub id: &'a str,
    pub file_name: &'a str,
    pub file_extension: &'a str,
    pub storage_path: &'a str,
    pub folder_path: &'a str,
    pub category_id: Option<&'a str>,
    pub status: &'a str,
    pub email_subject: Option<&'a str>,
    pub email_sender: Option<&'a str>,
    pub email_date: Option<Timestamp>,
    pub is_sent: bool,
    pub batch_id: Option<&'a str>,
    pub categorized_by: Option<&'a str>,
    pub categorized_at: Option<Timestamp>,
    /// The application's later columns: `None` when the table lacks the column.
    pub skip_reason: Option<Option<&'a str>>,
    pub validation_status: Option<Option<&'a str>>,
    pub cluster_id: Option<Option<&'a str>>,
}

/// A timestamptz as microseconds since the Unix epoch, or one of PostgreSQL's infinities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamp {
    Micros(i64),
    PosInfinity,
    NegInfinity,
}

impl Timestamp {
    /// RFC 3339 in UTC with microseconds, e.g. `2025-12-09T10:20:30.123456Z`. Microseconds keep
    /// a restore exact; JavaScript's `Date` parses the form.
    pub fn to_rfc3339(self) -> String {
        let mut buf = [0u8; 32];
        String::from_utf8_lossy(self.format_into(&mut buf)).into_owned()
    }

    /// Formats without allocating: the snapshot writes two timestamps per document, and
    /// chrono's general formatter would allocate for each. chrono still does the calendar math.
    pub fn format_into(self, buf: &mut [u8; 32]) -> &[u8] {
        let us = match self {
            Timestamp::PosInfinity => return b"infinity",
            Timestamp::NegInfinity => return b"-infinity",
            Timestamp::Micros(us) => us,
        };
        let Some(t) = DateTime::<Utc>::from_timestamp_micros(us) else {
            return b"infinity";
        };
        let (year, frac) = (t.year(), t.timestamp_subsec_micros());
        if !(0..=9999).contains(&year) {
            // Outside four-digit years fall back to chrono's own (allocating) formatter.
            let s = t.to_rfc3339_opts(SecondsFormat::Micros, true);
            let n = s.len().min(buf.len());
            buf[..n].copy_from_slice(&s.as_bytes()[..n]);
            return &buf[..n];
        }
        let mut put = |at: usize, value: u32, width: usize| {
            let mut v = value;
            for i in (0..width).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, year as u32, 4);
        put(5, t.month(), 2);
        put(8, t.day(), 2);
        put(11, t.hour(), 2);
        put(14, t.minute(), 2);
        put(17, t.second(), 2);
        put(20, frac, 6);
        buf[4] = b'-';
        buf[7] = b'-';
        buf[10] = b'T';
        buf[13] = b':';
        buf[16] = b':';
        buf[19] = b'.';
        buf[26] = b'Z';
        &buf[..27]
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 32];
        // Only ASCII is ever written.
        s.serialize_str(std::str::from_utf8(self.format_into(&mut buf)).unwrap_or("infinity"))
    }
}

/// Counts recomputed from the document rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub total: i64,
    pub categorized: i64,
    pub skipped: i64,
    pub uncategorized: i64,
}

/// The application's names first (its UI reads `stats.totalDocuments`), then format 1's.
impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(8))?;
        for (key, value) in [
            ("totalDocuments", self.total),
            ("categorizedCount", self.categorized),
            ("skippedCount", self.skipped),
            ("uncategorizedCount", self.uncategorized),
            ("total", self.total),
            ("categorized", self.categorized),
            ("skipped", self.skipped),
            ("uncategorized", self.uncategorized),
        ] {
            map.serialize_entry(key, &value)?;
        }
        map.end()
    }
}

/// A place where a denormalized counter disagrees with the rows it summarizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inconsistency {
    pub entity: &'static str,
    pub id: String,
    pub field: &'static str,
    pub stored: i64,
    pub actual: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DocumentOut<'a> {
    id: &'a str,
    file_name: &'a str,
    file_extension: &'a str,
    storage_path: &'a str,
    folder_path: &'a str,
    category_id: Option<&'a str>,
    category_name: Option<&'a str>,
    status: &'a str,
    email_subject: Option<&'a str>,
    email_sender: Option<&'a str>,
    email_date: Option<Timestamp>,
    is_sent: bool,
    batch_id: Option<&'a str>,
    categorized_by: Option<&'a str>,
    categorized_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skip_reason: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    validation_status: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_id: Option<Option<&'a str>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CategoryOut<'a> {
    id: &'a str,
    name: &'a str,
    merged_into: Option<&'a str>,
    document_count: i64,
    real_document_count: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchOut<'a> {
    id: &'a str,
    month_year: &'a str,
    assigned_to: Option<&'a str>,
    assigned_to_name: Option<&'a str>,
    document_count: i64,
    categorized_count: i64,
    skipped_count: i64,
    real_document_count: i64,
    real_categorized_count: i64,
    real_skipped_count: i64,
}

#[derive(Default, Clone, Copy)]
struct BatchTally {
    documents: i64,
    categorized: i64,
    skipped: i64,
}

/// Builds the snapshot while counting. Documents arrive in any order: each is serialized at once
/// into a staging buffer, and only a small index is sorted by id at the end, which is cheaper
/// than having the database sort whole rows. `Finished` then writes header, documents in id
/// order, and summaries into one output buffer of exactly the right size.
pub struct SnapshotWriter<'s> {
    meta: SessionMeta,
    category_index: HashMap<String, usize>,
    category_real: Vec<i64>,
    batch_index: HashMap<String, usize>,
    batch_real: Vec<BatchTally>,
    stats: Stats,
    /// Serialized documents, back to back, in arrival order.
    staged: &'s mut Vec<u8>,
    /// Document ids, back to back (the sort key).
    ids: Vec<u8>,
    /// (id range in `ids`, JSON range in `staged`) per document.
    index: Vec<(u32, u32, u32, u32)>,
    /// Documents whose category or batch is not one of this session's: reported, never hidden.
    foreign_refs: Vec<Inconsistency>,
}

/// What the caller records about a finished snapshot.
#[derive(Debug)]
pub struct SnapshotSummary {
    pub stats: Stats,
    pub inconsistencies: usize,
    pub taken_at_us: i64,
    pub visibility: String,
    pub previous_sha256: Option<String>,
}

/// A snapshot ready to be written out: `len()` bytes, written by `write_to`.
pub struct Finished<'s> {
    head: Vec<u8>,
    staged: &'s [u8],
    /// JSON ranges in `staged`, sorted by document id.
    order: Vec<(u32, u32)>,
    tail: Vec<u8>,
    pub summary: SnapshotSummary,
}

fn write_json<W: Write, T: Serialize + ?Sized>(out: &mut W, value: &T) {
    serde_json::to_writer(out, value).expect("writing JSON to memory cannot fail");
}

fn write_raw<W: Write>(out: &mut W, bytes: &[u8]) {
    out.write_all(bytes)
        .expect("writing JSON to memory cannot fail");
}

impl<'s> SnapshotWriter<'s> {
    /// `staged` is a scratch buffer the caller may reuse between snapshots; it is cleared here.
    pub fn new(meta: SessionMeta, staged: &'s mut Vec<u8>) -> Self {
        staged.clear();
        let expected = meta.total_documents.clamp(0, 1_000_000) as usize;
        let category_index = meta
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        let batch_index = meta
            .batches
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.clone(), i))
            .collect();
        SnapshotWriter {
            category_real: vec![0; meta.categories.len()],
            batch_real: vec![BatchTally::default(); meta.batches.len()],
            meta,
            category_index,
            batch_index,
            stats: Stats::default(),
            staged,
            ids: Vec::with_capacity(expected * 40),
            index: Vec::with_capacity(expected),
            foreign_refs: Vec::new(),
        }
    }

    /// Whether the documents pushed are as many as the session's rows counted apart in the same
    /// statement: a read that left rows out (or saw some twice) must not become a snapshot.
    pub fn check_complete(&self) -> Result<(), String> {
        if self.stats.total == self.meta.document_rows {
            Ok(())
        } else {
            Err(format!(
                "{} document rows were read, but the session has {}",
                self.stats.total, self.meta.document_rows
            ))
        }
    }

    /// Adds one document, in any order.
    pub fn push_document(&mut self, d: &DocumentRow<'_>) {
        self.stats.total += 1;
        let (categorized, skipped) = match d.status {
            "Categorized" => (1, 0),
            "Skipped" => (0, 1),
            _ => (0, 0),
        };
        self.stats.categorized += categorized;
        self.stats.skipped += skipped;
        self.stats.uncategorized += 1 - categorized - skipped;

        let mut category_name = None;
        if let Some(cat) = d.category_id {
            match self.category_index.get(cat) {
                Some(&i) => {
                    self.category_real[i] += 1;
                    category_name = Some(self.meta.categories[i].name.as_str());
                }
                None => self.foreign_refs.push(Inconsistency {
                    entity: "document",
                    id: d.id.to_string(),
                    field: "category_id_outside_session",
                    stored: 1,
                    actual: 0,
                }),
            }
        }
        if let Some(batch) = d.batch_id {
            match self.batch_index.get(batch) {
                Some(&i) => {
                    let t = &mut self.batch_real[i];
                    t.documents += 1;
                    t.categorized += categorized;
                    t.skipped += skipped;
                }
                None => self.foreign_refs.push(Inconsistency {
                    entity: "document",
                    id: d.id.to_string(),
                    field: "batch_id_outside_session",
                    stored: 1,
                    actual: 0,
                }),
            }
        }

        let doc = DocumentOut {
            id: d.id,
            file_name: d.file_name,
            file_extension: d.file_extension,
            storage_path: d.storage_path,
            folder_path: d.folder_path,
            category_id: d.category_id,
            category_name,
            status: d.status,
            email_subject: d.email_subject,
            email_sender: d.email_sender,
            email_date: d.email_date,
            is_sent: d.is_sent,
            batch_id: d.batch_id,
            categorized_by: d.categorized_by,
            categorized_at: d.categorized_at,
            skip_reason: d.skip_reason,
            validation_status: d.validation_status,
            cluster_id: d.cluster_id,
        };
        let id_start = self.ids.len() as u32;
        self.ids.extend_from_slice(d.id.as_bytes());
        let json_start = self.staged.len() as u32;
        write_json(&mut *self.staged, &doc);
        self.index.push((
            id_start,
            self.ids.len() as u32,
            json_start,
            self.staged.len() as u32,
        ));
    }

    fn inconsistencies(&self) -> Vec<Inconsistency> {
        let mut out = Vec::new();
        let mut check =
            |entity: &'static str, id: &str, field: &'static str, stored: i64, actual: i64| {
                if stored != actual {
                    out.push(Inconsistency {
                        entity,
                        id: id.to_string(),
                        field,
                        stored,
                        actual,
                    });
                }
            };
        let m = &self.meta;
        check(
            "session",
            &m.id,
            "total_documents",
            m.total_documents,
            self.stats.total,
        );
        check(
            "session",
            &m.id,
            "categorized_count",
            m.categorized_count,
            self.stats.categorized,
        );
        check(
            "session",
            &m.id,
            "skipped_count",
            m.skipped_count,
            self.stats.skipped,
        );
        for (c, real) in m.categories.iter().zip(&self.category_real) {
            check("category", &c.id, "document_count", c.document_count, *real);
        }
        for (b, real) in m.batches.iter().zip(&self.batch_real) {
            check(
                "batch",
                &b.id,
                "document_count",
                b.document_count,
                real.documents,
            );
            check(
                "batch",
                &b.id,
                "categorized_count",
                b.categorized_count,
                real.categorized,
            );
            check(
                "batch",
                &b.id,
                "skipped_count",
                b.skipped_count,
                real.skipped,
            );
        }
        let mut foreign = self.foreign_refs.clone();
        foreign.sort_by(|a, b| {
            a.id.as_bytes()
                .cmp(b.id.as_bytes())
                .then(a.field.cmp(b.field))
        });
        out.extend(foreign);
        out
    }

    /// Links this snapshot to the session's previous one (format 3's `previousSha256`).
    pub fn link_to(&mut self, previous_sha256: Option<String>) {
        self.meta.previous_sha256 = previous_sha256;
    }

    /// Sorts documents by id (bytewise) and serializes the header and summaries.
    pub fn finish(mut self) -> Finished<'s> {
        let ids = &self.ids;
        self.index.sort_unstable_by(|a, b| {
            ids[a.0 as usize..a.1 as usize].cmp(&ids[b.0 as usize..b.1 as usize])
        });
        let order = self.index.iter().map(|e| (e.2, e.3)).collect();

        let m = &self.meta;
        let mut head = Vec::with_capacity(512);
        write_raw(&mut head, b"{\"formatVersion\":");
        write_json(&mut head, &FORMAT_VERSION);
        write_raw(&mut head, b",\"previousSha256\":");
        write_json(&mut head, &m.previous_sha256);
        for (key, value) in [
            ("sessionId", &m.id),
            ("snapshotAt", &Timestamp::Micros(m.taken_at_us).to_rfc3339()),
            ("firmId", &m.firm_id),
            ("pstFileName", &m.pst_file_name),
            ("status", &m.status),
        ] {
            write_raw(&mut head, b",\"");
            write_raw(&mut head, key.as_bytes());
            write_raw(&mut head, b"\":");
            write_json(&mut head, value);
        }
        write_raw(&mut head, b",\"documents\":[");

        let inconsistencies = self.inconsistencies();
        let categories: Vec<CategoryOut> = m
            .categories
            .iter()
            .zip(&self.category_real)
            .map(|(c, real)| CategoryOut {
                id: &c.id,
                name: &c.name,
                merged_into: c.merged_into.as_deref(),
                document_count: c.document_count,
                real_document_count: *real,
            })
            .collect();
        let batches: Vec<BatchOut> = m
            .batches
            .iter()
            .zip(&self.batch_real)
            .map(|(b, real)| BatchOut {
                id: &b.id,
                month_year: &b.month_year,
                assigned_to: b.assigned_to.as_deref(),
                assigned_to_name: b.assigned_to_name.as_deref(),
                document_count: b.document_count,
                categorized_count: b.categorized_count,
                skipped_count: b.skipped_count,
                real_document_count: real.documents,
                real_categorized_count: real.categorized,
                real_skipped_count: real.skipped,
            })
            .collect();
        let mut tail = Vec::with_capacity(1024 + 300 * (categories.len() + batches.len()));
        write_raw(&mut tail, b"],\"stats\":");
        write_json(&mut tail, &self.stats);
        write_raw(&mut tail, b",\"categories\":");
        write_json(&mut tail, &categories);
        write_raw(&mut tail, b",\"batches\":");
        write_json(&mut tail, &batches);
        write_raw(&mut tail, b",\"consistency\":");
        write_json(&mut tail, &inconsistencies);
        write_raw(&mut tail, b"}");

        let summary = SnapshotSummary {
            stats: self.stats,
            inconsistencies: inconsistencies.len(),
            taken_at_us: m.taken_at_us,
            visibility: m.visibility.clone(),
            previous_sha256: m.previous_sha256.clone(),
        };
        Finished {
            head,
            staged: self.staged,
            order,
            tail,
            summary,
        }
    }
}

impl Finished<'_> {
    /// Exact size of the snapshot in bytes.
    pub fn len(&self) -> usize {
        let commas = self.order.len().saturating_sub(1);
        self.head.len() + self.staged.len() + commas + self.tail.len()
    }

    /// Never true: even an empty session's snapshot has its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the snapshot into `out`, which must be exactly `len()` bytes.
    pub fn write_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.len(), "output buffer has the wrong size");
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.head);
        for (i, &(start, end)) in self.order.iter().enumerate() {
            if i > 0 {
                put(b",");
            }
            put(&self.staged[start as usize..end as usize]);
        }
        put(&self.tail);
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.len()];
        self.write_to(&mut out);
        out
    }
}

// Reading snapshot documents: this extension's formats 2 and 1, and the application's own files.

/// Who wrote a snapshot document, told apart by `formatVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SnapshotFormat {
    /// This extension since 0.6.0: format 2 with `previousSha256`, the chain link.
    #[serde(rename = "3")]
    V3,
    /// This extension since 0.4.0: stats under the application's names, later columns.
    #[serde(rename = "2")]
    V2,
    /// This extension before 0.4.0.
    #[serde(rename = "1")]
    V1,
    /// The application's own `/api/export-snapshot` route: no `formatVersion`, stats copied from
    /// the session's counters, no `categorizedBy`, `categorizedAt` is the row's `updated_at`.
    #[serde(rename = "application")]
    Application,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDoc {
    pub format_version: Option<serde_json::Value>,
    pub session_id: String,
    pub documents: Vec<SnapshotDocument>,
    pub stats: Option<SnapshotStats>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStats {
    pub total: Option<i64>,
    pub total_documents: Option<i64>,
}

/// `Some(value)` when the key is present (even as null), `None` when it is absent.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDocument {
    pub id: String,
    pub category_id: Option<String>,
    pub status: String,
    pub categorized_by: Option<String>,
    pub categorized_at: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub skip_reason: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub validation_status: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub cluster_id: Option<Option<String>>,
}

/// A snapshot document checked for format, shape and completeness.
pub struct ParsedSnapshot {
    pub format: SnapshotFormat,
    pub doc: SnapshotDoc,
    /// What the restore report should tell about this document.
    pub notes: Vec<String>,
}

/// Parses and checks a snapshot document: format, shape, and that it is complete.
pub fn parse_snapshot(bytes: &[u8]) -> LbResult<ParsedSnapshot> {
    let bad = |why: String| {
        LbError::new(
            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            format!("not a usable snapshot: {why}"),
        )
        .hint("legacy_snapshot_import accepts format 2 and 1 of this extension and the application's own export-snapshot files.")
    };
    let doc: SnapshotDoc = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let format = match &doc.format_version {
        None => SnapshotFormat::Application,
        Some(v) if v.as_i64() == Some(3) => SnapshotFormat::V3,
        Some(v) if v.as_i64() == Some(2) => SnapshotFormat::V2,
        Some(v) if v.as_i64() == Some(1) => SnapshotFormat::V1,
        Some(v) => {
            return Err(bad(format!(
                "formatVersion {v} is not supported (expected 3, 2, 1, or none for the application's own files)"
            )))
        }
    };
    crate::ids::validate_id("sessionId", Some(&doc.session_id))?;
    let listed = doc.documents.len() as i64;
    let mut notes = Vec::new();
    let stats = doc
        .stats
        .as_ref()
        .ok_or_else(|| bad("it has no stats (truncated?)".into()))?;
    match format {
        // This extension counts its stats from the documents it wrote: a difference means a
        // document that lost its end.
        SnapshotFormat::V3 | SnapshotFormat::V2 | SnapshotFormat::V1 => {
            let total = if format != SnapshotFormat::V1 {
                stats.total_documents
            } else {
                stats.total
            };
            let key = if format != SnapshotFormat::V1 {
                "totalDocuments"
            } else {
                "total"
            };
            match total {
                Some(total) if total == listed => {}
                Some(total) => {
                    return Err(bad(format!(
                        "it lists {listed} documents but its stats say {total} (truncated?)"
                    )))
                }
                None => return Err(bad(format!("its stats have no {key} (truncated?)"))),
            }
        }
        // The application copied its session counters, which drift: reported, not refused.
        SnapshotFormat::Application => {
            notes.push("an application-made snapshot (no formatVersion): categorizedBy and categorizedAt are not in it, so each document keeps its current categorized_by and categorized_at".into());
            match stats.total_documents {
                Some(total) if total != listed => notes.push(format!(
                    "its stats.totalDocuments ({total}) was copied from the session's counter and differs from the {listed} documents it lists"
                )),
                Some(_) => {}
                None => return Err(bad("its stats have no totalDocuments (truncated?)".into())),
            }
        }
    }
    for d in &doc.documents {
        if !matches!(
            d.status.as_str(),
            "Uncategorized" | "Categorized" | "Skipped"
        ) {
            return Err(bad(format!(
                "document {:?} has status {:?}",
                d.id, d.status
            )));
        }
        if d.id.is_empty() {
            return Err(bad("a document has an empty id".into()));
        }
        if let Some(Some(cluster)) = &d.cluster_id {
            if !is_uuid(cluster) {
                return Err(bad(format!(
                    "document {:?} has clusterId {cluster:?}, which is not a UUID",
                    d.id
                )));
            }
        }
    }
    Ok(ParsedSnapshot { format, doc, notes })
}

/// The canonical text form of a UUID (what PostgreSQL prints), any case.
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SessionMeta {
        serde_json::from_str(
            r#"{"id":"s1","firmId":"f1","pstFileName":"a.pst","status":"InProgress",
                "totalDocuments":3,"categorizedCount":2,"skippedCount":0,
                "categories":[{"id":"c1","name":"Contracts","mergedInto":null,"documentCount":1},
                              {"id":"c2","name":"Old","mergedInto":"c1","documentCount":0}],
                "batches":[{"id":"b1","monthYear":"2020-01","assignedTo":"u1","assignedToName":"Ann Lee",
                            "documentCount":3,"categorizedCount":1,"skippedCount":1}],
                "visibility":"10:10:","takenAtUs":1765275630123456,"documentRows":3}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_read_that_left_rows_out_is_not_complete() {
        let mut staged = Vec::new();
        let mut w = SnapshotWriter::new(meta(), &mut staged);
        w.push_document(&doc("d1", Some("c1"), "Categorized"));
        w.push_document(&doc("d2", None, "Uncategorized"));
        assert_eq!(
            w.check_complete().unwrap_err(),
            "2 document rows were read, but the session has 3"
        );
        w.push_document(&doc("d3", None, "Uncategorized"));
        assert!(w.check_complete().is_ok());
        w.push_document(&doc("d4", None, "Uncategorized"));
        assert!(w.check_complete().is_err());
    }

    fn doc<'a>(id: &'a str, cat: Option<&'a str>, status: &'a str) -> DocumentRow<'a> {
        DocumentRow {
            id,
            file_name: "f \"quoted\".pdf",
            file_extension: "pdf",
            storage_path: "documents/s1/x",
            folder_path: "Inbox",
            category_id: cat,
            status,
            email_subject: Some("Re: ünïcode\n"),
            email_sender: None,
            email_date: Some(Timestamp::Micros(0)),
            is_sent: false,
            batch_id: Some("b1"),
            categorized_by: Some("u1"),
            categorized_at: Some(Timestamp::PosInfinity),
            skip_reason: Some(None),
            validation_status: Some(Some("Accepted")),
            cluster_id: None,
        }
    }

    fn build() -> (Vec<u8>, SnapshotSummary, serde_json::Value) {
        let mut staged = Vec::new();
        let mut w = SnapshotWriter::new(meta(), &mut staged);
        // Out of order on purpose: the writer sorts by id.
        w.push_document(&doc("d3", None, "Skipped"));
        w.push_document(&doc("d1", Some("c1"), "Categorized"));
        w.push_document(&doc("d2", Some("c1"), "Categorized"));
        let finished = w.finish();
        let json = finished.to_vec();
        let v = serde_json::from_slice(&json).unwrap();
        (json, finished.summary, v)
    }

    #[test]
    fn counts_come_from_the_documents() {
        let (_, summary, v) = build();
        assert_eq!(
            summary.stats,
            Stats {
                total: 3,
                categorized: 2,
                skipped: 1,
                uncategorized: 0
            }
        );
        assert_eq!(v["categories"][0]["realDocumentCount"], 2);
        assert_eq!(v["categories"][0]["documentCount"], 1);
        assert_eq!(v["documents"][0]["categoryName"], "Contracts");
        assert_eq!(v["batches"][0]["realCategorizedCount"], 2);
        assert_eq!(v["batches"][0]["assignedToName"], "Ann Lee");
    }

    #[test]
    fn drifted_counters_are_reported() {
        let (_, summary, v) = build();
        let c = v["consistency"].as_array().unwrap();
        let fields: Vec<(String, String)> = c
            .iter()
            .map(|i| {
                (
                    i["entity"].as_str().unwrap().into(),
                    i["field"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert!(fields.contains(&("category".into(), "document_count".into())));
        assert!(fields.contains(&("batch".into(), "categorized_count".into())));
        assert!(fields.contains(&("session".into(), "skipped_count".into())));
        assert!(!fields.contains(&("session".into(), "total_documents".into())));
        assert_eq!(summary.inconsistencies, c.len());
    }

    #[test]
    fn header_keys_come_first_and_in_order() {
        let (json, _, _) = build();
        let text = String::from_utf8(json).unwrap();
        assert!(text.starts_with(r#"{"formatVersion":3,"previousSha256":null,"sessionId":"s1","snapshotAt":"2025-12-09T10:20:30.123456Z","firmId":"f1","pstFileName":"a.pst","status":"InProgress","documents":[{"id":"d1""#), "{text}");
        let order: Vec<usize> = [
            "\"documents\"",
            "\"stats\"",
            "\"categories\"",
            "\"batches\"",
            "\"consistency\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }

    #[test]
    fn timestamps_are_utc_microseconds_and_infinities_survive() {
        assert_eq!(
            Timestamp::Micros(0).to_rfc3339(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(Timestamp::PosInfinity.to_rfc3339(), "infinity");
        assert_eq!(Timestamp::NegInfinity.to_rfc3339(), "-infinity");
        let (_, _, v) = build();
        assert_eq!(v["documents"][0]["categorizedAt"], "infinity");
        assert_eq!(v["documents"][0]["fileName"], "f \"quoted\".pdf");
    }

    #[test]
    fn fast_timestamp_format_agrees_with_chrono() {
        for us in [
            0i64,
            1,
            -1,
            1_765_275_630_123_456,
            253_402_300_799_999_999,
            -62_135_596_800_000_000,
            951_782_400_000_000,
        ] {
            let chrono = DateTime::<Utc>::from_timestamp_micros(us)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Micros, true);
            assert_eq!(Timestamp::Micros(us).to_rfc3339(), chrono, "{us}");
        }
        // Years beyond 9999 take chrono's path.
        let far = 253_402_300_800_000_000i64;
        assert_eq!(
            Timestamp::Micros(far).to_rfc3339(),
            DateTime::<Utc>::from_timestamp_micros(far)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Micros, true)
        );
    }

    #[test]
    fn documents_are_sorted_bytewise_and_empty_sessions_work() {
        let (_, _, v) = build();
        let ids: Vec<&str> = v["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["d1", "d2", "d3"]);
        let mut staged = vec![1, 2, 3];
        let finished = SnapshotWriter::new(meta(), &mut staged).finish();
        let v: serde_json::Value = serde_json::from_slice(&finished.to_vec()).unwrap();
        assert_eq!(v["documents"], serde_json::json!([]));
        assert_eq!(v["stats"]["total"], 0);
        assert_eq!(v["stats"]["totalDocuments"], 0);
    }

    #[test]
    fn stats_carry_the_application_names_first_and_format_1_names_after() {
        let (json, _, v) = build();
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains(r#""stats":{"totalDocuments":3,"categorizedCount":2,"skippedCount":1,"uncategorizedCount":0,"total":3,"categorized":2,"skipped":1,"uncategorized":0}"#), "{text}");
        assert_eq!(v["stats"]["totalDocuments"], v["stats"]["total"]);
    }

    #[test]
    fn later_columns_appear_only_when_the_table_has_them() {
        let (_, _, v) = build();
        let d = &v["documents"][0];
        // Column present, value NULL: the key is there with null.
        assert_eq!(d["skipReason"], serde_json::Value::Null);
        assert!(d.as_object().unwrap().contains_key("skipReason"));
        assert_eq!(d["validationStatus"], "Accepted");
        // Column absent: no key.
        assert!(!d.as_object().unwrap().contains_key("clusterId"));
    }

    #[test]
    fn the_writer_output_reads_back_as_format_3_with_its_chain_link() {
        let (json, _, _) = build();
        assert_eq!(chain_link(&json).unwrap(), Some(None));
        assert_eq!(chain_link(br#"{"formatVersion":2}"#).unwrap(), None);
        assert_eq!(
            chain_link(br#"{"formatVersion":3,"previousSha256":"ab"}"#).unwrap(),
            Some(Some("ab".into()))
        );
        let parsed = parse_snapshot(&json).unwrap();
        assert_eq!(parsed.format, SnapshotFormat::V3);
        assert_eq!(parsed.doc.documents.len(), 3);
        assert!(parsed.notes.is_empty());
        let d1 = &parsed.doc.documents[0];
        assert_eq!(d1.validation_status, Some(Some("Accepted".into())));
        assert_eq!(d1.skip_reason, Some(None));
        assert_eq!(d1.cluster_id, None);
    }

    #[test]
    fn format_1_and_application_files_are_read() {
        let v1 = br#"{"formatVersion":1,"sessionId":"s1","stats":{"total":1},
            "documents":[{"id":"d1","categoryId":"c1","status":"Categorized","categorizedBy":"u1","categorizedAt":null}]}"#;
        let parsed = parse_snapshot(v1).unwrap();
        assert_eq!(parsed.format, SnapshotFormat::V1);
        assert_eq!(
            parsed.doc.documents[0].categorized_by.as_deref(),
            Some("u1")
        );
        // The application's route: no formatVersion, drifted counters, no categorizedBy.
        let app = br#"{
          "sessionId": "s1", "snapshotAt": "2026-01-01T00:00:00.000Z",
          "stats": {"totalDocuments": 5, "categorizedCount": 1, "skippedCount": 0, "uncategorizedCount": 0},
          "documents": [{"id": "d1", "categoryId": "c1", "status": "Categorized", "categorizedAt": "2026-01-01T00:00:00.000Z"}]
        }"#;
        let parsed = parse_snapshot(app).unwrap();
        assert_eq!(parsed.format, SnapshotFormat::Application);
        assert_eq!(parsed.notes.len(), 2, "{:?}", parsed.notes);
    }

    #[test]
    fn unusable_documents_are_refused() {
        for (bad, why) in [
            (&br#"{"formatVersion":2,"sessionId":"s1","stats":{"totalDocuments":2},"documents":[{"id":"d1","status":"Skipped"}]}"#[..], "truncated"),
            (br#"{"formatVersion":2,"sessionId":"s1","stats":{"total":1},"documents":[{"id":"d1","status":"Skipped"}]}"#, "totalDocuments"),
            (br#"{"formatVersion":4,"sessionId":"s1","stats":{},"documents":[]}"#, "not supported"),
            (br#"{"formatVersion":2,"sessionId":"../x","stats":{"totalDocuments":0},"documents":[]}"#, "safe identifier"),
            (br#"{"formatVersion":2,"sessionId":"s1","stats":{"totalDocuments":1},"documents":[{"id":"d1","status":"Lost"}]}"#, "status"),
            (br#"{"formatVersion":2,"sessionId":"s1","stats":{"totalDocuments":1},"documents":[{"id":"d1","status":"Skipped","clusterId":"a/b"}]}"#, "UUID"),
            (br#"{"sessionId":"s1","documents":[]}"#, "no stats"),
            (br#"[1, 2]"#, "invalid type"),
        ] {
            let err = parse_snapshot(bad).err().unwrap_or_else(|| panic!("accepted: {}", String::from_utf8_lossy(bad)));
            assert!(err.message.contains(why), "{why}: {}", err.message);
        }
    }

    #[test]
    fn same_input_gives_same_bytes() {
        assert_eq!(build().0, build().0);
    }

    #[test]
    fn references_outside_the_session_are_reported() {
        let mut staged = Vec::new();
        let mut w = SnapshotWriter::new(meta(), &mut staged);
        w.push_document(&doc("d9", Some("other-session-cat"), "Categorized"));
        let v: serde_json::Value = serde_json::from_slice(&w.finish().to_vec()).unwrap();
        assert!(v["consistency"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["field"] == "category_id_outside_session"));
        assert_eq!(v["documents"][0]["categoryName"], serde_json::Value::Null);
    }
}

#[derive(Deserialize)]
struct ChainFields {
    #[serde(rename = "previousSha256", default, deserialize_with = "present")]
    previous_sha256: Option<Option<String>>,
}

/// A snapshot document's chain link: `Some(None)` for the first of its session, `Some(Some(sha))`
/// for a later one, `None` for a document written before the chain (formats 1 and 2, the
/// application's own files).
pub fn chain_link(bytes: &[u8]) -> Result<Option<Option<String>>, String> {
    serde_json::from_slice::<ChainFields>(bytes)
        .map(|c| c.previous_sha256)
        .map_err(|e| format!("not a snapshot document: {e}"))
}

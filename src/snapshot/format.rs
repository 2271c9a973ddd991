//! The snapshot document (format version 1): its parts, the counts recomputed from the document
//! rows, the consistency report, and deterministic serialization. Pure Rust, no Postgres calls.
//!
//! Layout of the JSON, keys in this order:
//! `formatVersion, sessionId, snapshotAt, firmId, pstFileName, status, stats, categories,
//! batches, consistency, documents`. Arrays are sorted: categories and documents by id (bytewise),
//! batches by monthYear then id. The big `documents` array comes last so the summary reads first.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub const FORMAT_VERSION: i32 = 1;

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
        match self {
            Timestamp::PosInfinity => "infinity".into(),
            Timestamp::NegInfinity => "-infinity".into(),
            Timestamp::Micros(us) => match DateTime::<Utc>::from_timestamp_micros(us) {
                Some(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
                None => "infinity".into(),
            },
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub total: i64,
    pub categorized: i64,
    pub skipped: i64,
    pub uncategorized: i64,
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

/// Streams documents into JSON while counting, then assembles the whole snapshot.
pub struct SnapshotWriter {
    meta: SessionMeta,
    category_index: HashMap<String, usize>,
    category_real: Vec<i64>,
    batch_index: HashMap<String, usize>,
    batch_real: Vec<BatchTally>,
    stats: Stats,
    documents_json: Vec<u8>,
    /// Documents whose category or batch is not one of this session's: reported, never hidden.
    foreign_refs: Vec<Inconsistency>,
}

/// The finished snapshot: exact bytes plus what the caller records about them.
pub struct BuiltSnapshot {
    pub json: Vec<u8>,
    pub stats: Stats,
    pub inconsistencies: usize,
    pub taken_at_us: i64,
    pub visibility: String,
    pub session_id: String,
}

impl SnapshotWriter {
    pub fn new(meta: SessionMeta, expected_documents: usize) -> Self {
        let category_index = meta.categories.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
        let batch_index = meta.batches.iter().enumerate().map(|(i, b)| (b.id.clone(), i)).collect();
        let category_real = vec![0; meta.categories.len()];
        let batch_real = vec![BatchTally::default(); meta.batches.len()];
        let mut documents_json = Vec::with_capacity(expected_documents * 512 + 2);
        documents_json.push(b'[');
        SnapshotWriter {
            meta,
            category_index,
            category_real,
            batch_index,
            batch_real,
            stats: Stats::default(),
            documents_json,
            foreign_refs: Vec::new(),
        }
    }

    /// Adds one document. Documents must arrive sorted by id.
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

        if self.stats.total > 1 {
            self.documents_json.push(b',');
        }
        let out = DocumentOut {
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
        };
        serde_json::to_writer(&mut self.documents_json, &out).expect("writing JSON to memory cannot fail");
    }

    fn inconsistencies(&self) -> Vec<Inconsistency> {
        let mut out = Vec::new();
        let mut check = |entity: &'static str, id: &str, field: &'static str, stored: i64, actual: i64| {
            if stored != actual {
                out.push(Inconsistency { entity, id: id.to_string(), field, stored, actual });
            }
        };
        let m = &self.meta;
        check("session", &m.id, "total_documents", m.total_documents, self.stats.total);
        check("session", &m.id, "categorized_count", m.categorized_count, self.stats.categorized);
        check("session", &m.id, "skipped_count", m.skipped_count, self.stats.skipped);
        for (c, real) in m.categories.iter().zip(&self.category_real) {
            check("category", &c.id, "document_count", c.document_count, *real);
        }
        for (b, real) in m.batches.iter().zip(&self.batch_real) {
            check("batch", &b.id, "document_count", b.document_count, real.documents);
            check("batch", &b.id, "categorized_count", b.categorized_count, real.categorized);
            check("batch", &b.id, "skipped_count", b.skipped_count, real.skipped);
        }
        out.extend(self.foreign_refs.iter().cloned());
        out
    }

    pub fn finish(mut self) -> BuiltSnapshot {
        self.documents_json.push(b']');
        let inconsistencies = self.inconsistencies();
        let m = &self.meta;
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

        let mut json = Vec::with_capacity(self.documents_json.len() + 4096 + 256 * (categories.len() + batches.len()));
        let field = |json: &mut Vec<u8>, name: &str, first: bool| {
            if !first {
                json.push(b',');
            }
            json.push(b'"');
            json.extend_from_slice(name.as_bytes());
            json.extend_from_slice(b"\":");
        };
        let put = |json: &mut Vec<u8>, v: &dyn erased::Ser| v.write(json);
        json.push(b'{');
        field(&mut json, "formatVersion", true);
        put(&mut json, &FORMAT_VERSION);
        field(&mut json, "sessionId", false);
        put(&mut json, &m.id);
        field(&mut json, "snapshotAt", false);
        put(&mut json, &Timestamp::Micros(m.taken_at_us));
        field(&mut json, "firmId", false);
        put(&mut json, &m.firm_id);
        field(&mut json, "pstFileName", false);
        put(&mut json, &m.pst_file_name);
        field(&mut json, "status", false);
        put(&mut json, &m.status);
        field(&mut json, "stats", false);
        put(&mut json, &self.stats);
        field(&mut json, "categories", false);
        put(&mut json, &categories);
        field(&mut json, "batches", false);
        put(&mut json, &batches);
        field(&mut json, "consistency", false);
        put(&mut json, &inconsistencies);
        field(&mut json, "documents", false);
        json.extend_from_slice(&self.documents_json);
        json.push(b'}');

        BuiltSnapshot {
            json,
            stats: self.stats,
            inconsistencies: inconsistencies.len(),
            taken_at_us: m.taken_at_us,
            visibility: m.visibility.clone(),
            session_id: m.id.clone(),
        }
    }
}

/// Lets one helper serialize values of different types in field order.
mod erased {
    pub trait Ser {
        fn write(&self, out: &mut Vec<u8>);
    }
    impl<T: serde::Serialize + ?Sized> Ser for T {
        fn write(&self, out: &mut Vec<u8>) {
            serde_json::to_writer(out, self).expect("writing JSON to memory cannot fail");
        }
    }
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
                "visibility":"10:10:","takenAtUs":1765275630123456}"#,
        )
        .unwrap()
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
        }
    }

    fn build() -> (BuiltSnapshot, serde_json::Value) {
        let mut w = SnapshotWriter::new(meta(), 3);
        w.push_document(&doc("d1", Some("c1"), "Categorized"));
        w.push_document(&doc("d2", Some("c1"), "Categorized"));
        w.push_document(&doc("d3", None, "Skipped"));
        let built = w.finish();
        let v = serde_json::from_slice(&built.json).unwrap();
        (built, v)
    }

    #[test]
    fn counts_come_from_the_documents() {
        let (built, v) = build();
        assert_eq!(built.stats, Stats { total: 3, categorized: 2, skipped: 1, uncategorized: 0 });
        assert_eq!(v["categories"][0]["realDocumentCount"], 2);
        assert_eq!(v["categories"][0]["documentCount"], 1);
        assert_eq!(v["documents"][0]["categoryName"], "Contracts");
        assert_eq!(v["batches"][0]["realCategorizedCount"], 2);
        assert_eq!(v["batches"][0]["assignedToName"], "Ann Lee");
    }

    #[test]
    fn drifted_counters_are_reported() {
        let (built, v) = build();
        let c = v["consistency"].as_array().unwrap();
        let fields: Vec<(String, String)> =
            c.iter().map(|i| (i["entity"].as_str().unwrap().into(), i["field"].as_str().unwrap().into())).collect();
        assert!(fields.contains(&("category".into(), "document_count".into())));
        assert!(fields.contains(&("batch".into(), "categorized_count".into())));
        assert!(fields.contains(&("session".into(), "skipped_count".into())));
        assert!(!fields.contains(&("session".into(), "total_documents".into())));
        assert_eq!(built.inconsistencies, c.len());
    }

    #[test]
    fn header_keys_come_first_and_in_order() {
        let (built, _) = build();
        let text = String::from_utf8(built.json).unwrap();
        assert!(text.starts_with(r#"{"formatVersion":1,"sessionId":"s1","snapshotAt":"2025-12-09T10:20:30.123456Z","firmId":"f1""#), "{text}");
        assert!(text.find("\"consistency\"").unwrap() < text.find("\"documents\"").unwrap());
    }

    #[test]
    fn timestamps_are_utc_microseconds_and_infinities_survive() {
        assert_eq!(Timestamp::Micros(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp::PosInfinity.to_rfc3339(), "infinity");
        assert_eq!(Timestamp::NegInfinity.to_rfc3339(), "-infinity");
        let (_, v) = build();
        assert_eq!(v["documents"][0]["categorizedAt"], "infinity");
        assert_eq!(v["documents"][0]["fileName"], "f \"quoted\".pdf");
    }

    #[test]
    fn same_input_gives_same_bytes() {
        assert_eq!(build().0.json, build().0.json);
    }

    #[test]
    fn references_outside_the_session_are_reported() {
        let mut w = SnapshotWriter::new(meta(), 1);
        w.push_document(&doc("d9", Some("other-session-cat"), "Categorized"));
        let v: serde_json::Value = serde_json::from_slice(&w.finish().json).unwrap();
        assert!(v["consistency"].as_array().unwrap().iter().any(|i| i["field"] == "category_id_outside_session"));
        assert_eq!(v["documents"][0]["categoryName"], serde_json::Value::Null);
    }
}

//! Recovery: verifying a snapshot in object storage, fetching one, and restoring a session's
//! categorization from a snapshot (held in the database, fetched from R2, or given as a document).
//!
//! Restore rules (also in docs/operations.md, Recovery):
//! - Only documents present both in the snapshot and in the database are changed, and only when
//!   their category, status or a later column (skip_reason, validation_status, cluster_id, where
//!   both the snapshot and the table have it) differ; they get back those, and categorized_by and
//!   categorized_at except from the application's own files, which do not hold them. Documents missing from the database are reported, never invented; documents
//!   not in the snapshot are reported and left alone.
//! - A snapshot category that no longer exists is reported and its documents are left alone. A
//!   category that was merged away is followed through `merged_into` to the category that holds
//!   its documents now (at most 10 steps, cycles refused).
//! - Applying recomputes every denormalized counter of the session from the rows, logs each
//!   change with source `restore`, and writes a `SNAPSHOT_RESTORED` audit row.

use crate::error::{LbError, LbResult};
use crate::snapshot::format::{
    parse_snapshot, LaterColumn, ParsedSnapshot, SnapshotDocument, SnapshotFormat, LATER_COLUMNS,
};
use crate::worker::settings;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// Snapshot keys this extension writes: `backups/{id}/categorization-{timestamp}.json`.
pub fn validate_snapshot_key(key: Option<&str>) -> LbResult<String> {
    let key = key.ok_or_else(|| LbError::null_value("key"))?;
    let shown: String = key.chars().take(80).collect();
    let bad = || {
        LbError::invalid_parameter(format!("{shown:?}{} is not a snapshot key", if key.chars().count() > 80 { "…" } else { "" }))
            .hint("Snapshot keys look like backups/<session id>/categorization-2025-12-09T10-20-30-123Z.json.")
    };
    let rest = key.strip_prefix("backups/").ok_or_else(bad)?;
    let (session, file) = rest.split_once('/').ok_or_else(bad)?;
    crate::ids::validate_id("session id in key", Some(session)).map_err(|_| bad())?;
    let stamp = file
        .strip_prefix("categorization-")
        .and_then(|f| f.strip_suffix(".json"))
        .ok_or_else(bad)?;
    if stamp.len() != 24
        || !stamp
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == 'T' || c == 'Z')
    {
        return Err(bad());
    }
    Ok(key.to_string())
}

/// Downloads a snapshot object and checks it is JSON.
pub fn fetch(key: &str) -> LbResult<Vec<u8>> {
    let body = settings::sql_client()?.get_object(key)?.ok_or_else(|| {
        LbError::not_found(format!("object {key} does not exist in object storage"))
    })?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(|e| {
        LbError::new(
            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            format!("object {key} is not valid JSON: {e}"),
        )
    })?;
    Ok(body)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    snapshot_id: String,
    snapshot_key: String,
    result: &'static str,
    expected_sha256: String,
    actual_sha256: Option<String>,
    expected_bytes: i64,
    actual_bytes: Option<usize>,
}

/// Downloads the snapshot's object and compares its sha256 with the stored one. Records the
/// result; a mismatch is reported, never repaired.
pub fn verify(snapshot_id: &str) -> LbResult<Verification> {
    let (key, sha, bytes) = Spi::connect(|c| -> LbResult<(String, String, i64)> {
        let t = c.select(
            "SELECT snapshot_key, sha256, bytes FROM legacy_backup.snapshots WHERE id = $1",
            None,
            &[snapshot_id.into()],
        )?;
        if t.is_empty() {
            return Err(LbError::not_found(format!(
                "snapshot \"{snapshot_id}\" does not exist"
            )));
        }
        let r = t.first();
        Ok((
            r.get(1)?.unwrap_or_default(),
            r.get(2)?.unwrap_or_default(),
            r.get(3)?.unwrap_or(0),
        ))
    })?;
    // No lock is held here: the HTTP request runs before this function writes anything.
    let body = settings::sql_client()?.get_object(&key)?;
    let actual = body.as_ref().map(|b| hex::encode(Sha256::digest(b)));
    let result = match &actual {
        None => "missing",
        Some(a) if *a == sha => "verified",
        Some(_) => "mismatch",
    };
    Spi::run_with_args(
        "UPDATE legacy_backup.snapshots SET verified_at = now(), verify_result = $2 WHERE id = $1",
        &[snapshot_id.into(), result.into()],
    )?;
    Ok(Verification {
        snapshot_id: snapshot_id.to_string(),
        snapshot_key: key,
        result,
        expected_sha256: sha,
        actual_sha256: actual,
        expected_bytes: bytes,
        actual_bytes: body.map(|b| b.len()),
    })
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct DocumentDiff {
    document_id: String,
    current_category_id: Option<String>,
    current_status: String,
    snapshot_category_id: Option<String>,
    restored_category_id: Option<String>,
    snapshot_status: String,
    /// Which of category, status, skipReason, validationStatus, clusterId differ.
    changed: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    session_id: String,
    source: String,
    format: SnapshotFormat,
    dry_run: bool,
    changes: usize,
    unchanged: usize,
    missing_documents: Vec<String>,
    missing_categories: Vec<String>,
    merged_categories: BTreeMap<String, String>,
    documents_not_in_snapshot: usize,
    /// Whether categorized_by and categorized_at came from the snapshot (not in the
    /// application's own files).
    categorized_by_restored: bool,
    /// The application's later columns this restore brought back (present in both the snapshot
    /// and the table).
    restored_columns: Vec<&'static str>,
    notes: Vec<String>,
    documents: Vec<DocumentDiff>,
}

/// The snapshot's bytes: from the database, or from R2 when the body was pruned (checked
/// against the stored sha256 either way).
fn snapshot_bytes(snapshot_id: &str) -> LbResult<(Vec<u8>, String)> {
    let (key, sha, body) = Spi::connect(|c| -> LbResult<(String, String, Option<Vec<u8>>)> {
        let t = c.select(
            "SELECT snapshot_key, sha256, body FROM legacy_backup.snapshots WHERE id = $1",
            None,
            &[snapshot_id.into()],
        )?;
        if t.is_empty() {
            return Err(LbError::not_found(format!("snapshot \"{snapshot_id}\" does not exist"))
                .hint("See the legacy_snapshots view; a snapshot only in R2 can be restored with legacy_snapshot_import(legacy_snapshot_fetch(key), …)."));
        }
        let r = t.first();
        Ok((
            r.get(1)?.unwrap_or_default(),
            r.get(2)?.unwrap_or_default(),
            r.get(3)?,
        ))
    })?;
    let (body, source) = match body {
        Some(b) => (b, "database".to_string()),
        None => (fetch(&key)?, format!("object storage ({key})")),
    };
    if hex::encode(Sha256::digest(&body)) != sha {
        return Err(LbError::new(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("snapshot {snapshot_id} does not match its sha256"),
        )
        .detail(format!("Source: {source}."))
        .hint("Verify it with legacy_snapshot_verify(); restore from another snapshot."));
    }
    Ok((body, source))
}

pub fn restore_snapshot(snapshot_id: &str, actor: &str, dry_run: bool) -> LbResult<RestoreReport> {
    crate::partner::require_partner(actor)?;
    let (bytes, source) = snapshot_bytes(snapshot_id)?;
    let parsed = parse_snapshot(&bytes)?;
    restore(
        parsed,
        actor,
        dry_run,
        format!("snapshot {snapshot_id} from the {source}"),
        Some(snapshot_id),
    )
}

pub fn import_snapshot(json: &str, actor: &str, dry_run: bool) -> LbResult<RestoreReport> {
    crate::partner::require_partner(actor)?;
    let parsed = parse_snapshot(json.as_bytes())?;
    restore(parsed, actor, dry_run, "imported document".into(), None)
}

/// A document's categorization as stored or as restored.
#[derive(Clone, PartialEq, Eq)]
struct DocumentState {
    category: Option<String>,
    status: String,
    /// skip_reason, validation_status, cluster_id as text (None where absent or NULL).
    later: [Option<String>; 3],
}

fn restore(
    parsed: ParsedSnapshot,
    actor: &str,
    dry_run: bool,
    source: String,
    snapshot_id: Option<&str>,
) -> LbResult<RestoreReport> {
    let ParsedSnapshot {
        format,
        doc,
        mut notes,
    } = parsed;
    let session_id = doc.session_id.clone();
    let restore_categorized_by = format != SnapshotFormat::Application;
    // A later column is restored when the table has it and the snapshot carries its key.
    let mut restored_columns = Vec::new();
    let mut restorable = [false; 3];
    for (i, LaterColumn { key, column, .. }) in LATER_COLUMNS.iter().enumerate() {
        let in_table = crate::attach::document_has_column(column)?;
        let in_snapshot = doc.documents.iter().any(|d| later_value(d, i).is_some());
        if in_table && in_snapshot {
            restorable[i] = true;
            restored_columns.push(*key);
        } else if in_snapshot {
            notes.push(format!("{key} is in the snapshot but extracted_documents has no {column} column: not restored"));
        }
    }
    let q = |query: &str| crate::attach::sql(query);
    let current_later = |i: usize| match restorable[i] {
        true => LATER_COLUMNS[i].read,
        false => "NULL::text",
    };
    let (lock_session, categories_query, documents_query) = (
        q("SELECT 1 FROM @extschema@.legacy_import_sessions WHERE id = $1 FOR UPDATE")?,
        q("SELECT id, merged_into FROM @extschema@.import_categories WHERE session_id = $1")?,
        q(&format!(
            "SELECT d.id, d.category_id, pg_catalog.format('%s', d.status), {}, {}, {} FROM @extschema@.extracted_documents d \
             WHERE d.session_id = $1 ORDER BY d.id FOR UPDATE",
            current_later(0),
            current_later(1),
            current_later(2)
        ))?,
    );
    // Later columns are set from text with a cast to the column's own type (as its owner).
    let mut later_sets = String::new();
    for (i, LaterColumn { column, .. }) in LATER_COLUMNS.iter().enumerate() {
        if restorable[i] {
            let ty = crate::attach::document_column_type(column)?;
            later_sets.push_str(&format!(
                ", {column} = CASE WHEN p.has_{column} THEN p.{column}::{ty} ELSE d.{column} END"
            ));
        }
    }
    let restore_query = q(&format!(
        "UPDATE @extschema@.extracted_documents d SET category_id = p.cat, \
                status = p.status::@extschema@.\"DocumentCategorizationStatus\", \
                categorized_by = CASE WHEN $7 THEN p.by ELSE d.categorized_by END, \
                categorized_at = CASE WHEN $7 THEN p.at::timestamptz ELSE d.categorized_at END, \
                updated_at = pg_catalog.now(){later_sets} \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                     $8::text[], $9::text[], $10::text[], $11::bool[], $12::bool[], $13::bool[]) \
              AS p(id, cat, status, by, at, skip_reason, validation_status, cluster_id, \
                   has_skip_reason, has_validation_status, has_cluster_id) \
         WHERE d.id = p.id AND d.session_id = $6"
    ))?;
    // Only application tables are read and written here, so all of it runs as their owner; the
    // triggers log the changes with source `restore`, credited to the partner.
    crate::privilege::with_change_source("restore", actor, || {
        Spi::connect_mut(|client| {
            let exists = client.update(&lock_session, None, &[session_id.as_str().into()])?;
            if exists.is_empty() {
                return Err(LbError::not_found(format!(
                "the snapshot's session \"{session_id}\" does not exist in this database"
            ))
            .hint(
                "Restore the session's rows first (pg_restore); a restore never invents documents.",
            ));
            }
            // Categories of the session: id -> merged_into.
            let mut categories: HashMap<String, Option<String>> = HashMap::new();
            for row in client.update(&categories_query, None, &[session_id.as_str().into()])? {
                categories.insert(row.get(1)?.unwrap_or_default(), row.get(2)?);
            }
            // Current documents, locked so the diff stays true until the transaction ends.
            let mut current: HashMap<String, DocumentState> = HashMap::new();
            for row in client.update(&documents_query, None, &[session_id.as_str().into()])? {
                current.insert(
                    row.get(1)?.unwrap_or_default(),
                    DocumentState {
                        category: row.get(2)?,
                        status: row.get(3)?.unwrap_or_default(),
                        later: [row.get(4)?, row.get(5)?, row.get(6)?],
                    },
                );
            }

            let mut missing_documents = Vec::new();
            let mut missing_categories = std::collections::BTreeSet::new();
            let mut merged = BTreeMap::new();
            let mut diffs = Vec::new();
            let mut apply: Vec<(&SnapshotDocument, DocumentState)> = Vec::new();
            let mut unchanged = 0;
            let mut seen = std::collections::HashSet::new();
            'docs: for d in &doc.documents {
                seen.insert(d.id.as_str());
                let Some(now) = current.get(&d.id) else {
                    missing_documents.push(d.id.clone());
                    continue;
                };
                let mut target = d.category_id.clone();
                if let Some(cat) = &d.category_id {
                    let mut at = cat.clone();
                    for _ in 0..10 {
                        match categories.get(&at) {
                            None => {
                                missing_categories.insert(cat.clone());
                                continue 'docs;
                            }
                            Some(Some(next)) => at = next.clone(),
                            Some(None) => break,
                        }
                    }
                    if categories.get(&at).is_none_or(|m| m.is_some()) {
                        missing_categories.insert(cat.clone()); // a merge cycle or chain too long
                        continue;
                    }
                    if at != *cat {
                        merged.insert(cat.clone(), at.clone());
                    }
                    target = Some(at);
                }
                let wanted = DocumentState {
                    category: target.clone(),
                    status: d.status.clone(),
                    later: std::array::from_fn(|i| match later_value(d, i) {
                        Some(value) if restorable[i] => value.clone(),
                        _ => now.later[i].clone(),
                    }),
                };
                if wanted == *now {
                    unchanged += 1;
                    continue;
                }
                let mut changed = Vec::new();
                if wanted.category != now.category {
                    changed.push("category");
                }
                if wanted.status != now.status {
                    changed.push("status");
                }
                for (i, LaterColumn { key, .. }) in LATER_COLUMNS.iter().enumerate() {
                    if wanted.later[i] != now.later[i] {
                        changed.push(*key);
                    }
                }
                diffs.push(DocumentDiff {
                    document_id: d.id.clone(),
                    current_category_id: now.category.clone(),
                    current_status: now.status.clone(),
                    snapshot_category_id: d.category_id.clone(),
                    restored_category_id: target,
                    snapshot_status: d.status.clone(),
                    changed,
                });
                apply.push((d, wanted));
            }
            let not_in_snapshot = current
                .keys()
                .filter(|id| !seen.contains(id.as_str()))
                .count();

            if !dry_run && !apply.is_empty() {
                let ids: Vec<String> = apply.iter().map(|(d, _)| d.id.clone()).collect();
                let cats: Vec<Option<String>> =
                    apply.iter().map(|(_, w)| w.category.clone()).collect();
                let statuses: Vec<String> = apply.iter().map(|(_, w)| w.status.clone()).collect();
                let bys: Vec<Option<String>> = apply
                    .iter()
                    .map(|(d, _)| d.categorized_by.clone())
                    .collect();
                let ats: Vec<Option<String>> = apply
                    .iter()
                    .map(|(d, _)| d.categorized_at.clone())
                    .collect();
                let later = |i: usize| -> Vec<Option<String>> {
                    apply.iter().map(|(_, w)| w.later[i].clone()).collect()
                };
                let has = |i: usize| -> Vec<bool> {
                    apply
                        .iter()
                        .map(|(d, _)| restorable[i] && later_value(d, i).is_some())
                        .collect()
                };
                crate::audit_trail::writing(&ids, || {
                    client.update(
                        &restore_query,
                        None,
                        &[
                            ids.clone().into(),
                            cats.clone().into(),
                            statuses.clone().into(),
                            bys.into(),
                            ats.into(),
                            session_id.as_str().into(),
                            restore_categorized_by.into(),
                            later(0).into(),
                            later(1).into(),
                            later(2).into(),
                            has(0).into(),
                            has(1).into(),
                            has(2).into(),
                        ],
                    )
                })?;
                crate::privilege::verify_written(client, "restore", &ids, &cats, &statuses)?;
            }
            if !dry_run {
                recount(client, &session_id)?;
                let details = serde_json::json!({
                    "snapshotId": snapshot_id,
                    "source": source,
                    "format": format,
                    "changes": apply.len(),
                    "missingDocuments": missing_documents.len(),
                    "missingCategories": missing_categories.iter().collect::<Vec<_>>(),
                    "mergedCategories": merged,
                    "categorizedByRestored": restore_categorized_by,
                    "restoredColumns": restored_columns,
                });
                crate::app_audit_log::write(
                    client,
                    &session_id,
                    actor,
                    "SNAPSHOT_RESTORED",
                    &details,
                )?;
            }
            Ok(RestoreReport {
                session_id: session_id.clone(),
                source,
                format,
                dry_run,
                changes: diffs.len(),
                unchanged,
                missing_documents,
                missing_categories: missing_categories.into_iter().collect(),
                merged_categories: merged,
                documents_not_in_snapshot: not_in_snapshot,
                categorized_by_restored: restore_categorized_by,
                restored_columns,
                notes,
                documents: diffs,
            })
        })
    })
}

/// The snapshot's value of later column `i` for one document (`None`: key absent).
fn later_value(d: &SnapshotDocument, i: usize) -> Option<&Option<String>> {
    match i {
        0 => d.skip_reason.as_ref(),
        1 => d.validation_status.as_ref(),
        _ => d.cluster_id.as_ref(),
    }
}

/// Every denormalized counter of the session, recomputed from its rows.
fn recount(client: &mut pgrx::spi::SpiClient<'_>, session_id: &str) -> LbResult<()> {
    for query in [
        "UPDATE @extschema@.import_categories c SET document_count = x.n, updated_at = now() \
         FROM (SELECT c2.id, count(d.id) AS n FROM @extschema@.import_categories c2 \
               LEFT JOIN @extschema@.extracted_documents d ON d.category_id = c2.id WHERE c2.session_id = $1 GROUP BY c2.id) x \
         WHERE c.id = x.id AND c.document_count IS DISTINCT FROM x.n",
        "UPDATE @extschema@.document_batches b SET document_count = x.n, categorized_count = x.c, skipped_count = x.s, updated_at = now() \
         FROM (SELECT b2.id, count(d.id) AS n, count(d.id) FILTER (WHERE pg_catalog.format('%s', d.status) = 'Categorized') AS c, \
                      count(d.id) FILTER (WHERE pg_catalog.format('%s', d.status) = 'Skipped') AS s \
               FROM @extschema@.document_batches b2 LEFT JOIN @extschema@.extracted_documents d ON d.batch_id = b2.id \
               WHERE b2.session_id = $1 GROUP BY b2.id) x \
         WHERE b.id = x.id AND (b.document_count, b.categorized_count, b.skipped_count) IS DISTINCT FROM (x.n, x.c, x.s)",
        "UPDATE @extschema@.legacy_import_sessions s SET total_documents = x.n, categorized_count = x.c, skipped_count = x.s, updated_at = now() \
         FROM (SELECT count(*) AS n, count(*) FILTER (WHERE pg_catalog.format('%s', status) = 'Categorized') AS c, \
                      count(*) FILTER (WHERE pg_catalog.format('%s', status) = 'Skipped') AS s FROM @extschema@.extracted_documents WHERE session_id = $1) x \
         WHERE s.id = $1",
    ] {
        client.update(&crate::attach::sql(query)?, None, &[session_id.into()])?;
    }
    Ok(())
}

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

use crate::backup::{classify, open_fetched, record_check, BackupKind, Finding, Recorded, Refusal};
use crate::error::{LbError, LbResult};
use crate::snapshot::format::{
    parse_snapshot, LaterColumn, ParsedSnapshot, SnapshotDocument, SnapshotFormat, LATER_COLUMNS,
};
use crate::storage::seal::KeyRing;
use crate::worker::settings;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde::Serialize;
use serde_json::json;
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

/// What the database records of the snapshot at `key`, if it knows it.
fn recorded_at(key: &str) -> LbResult<Option<Recorded>> {
    Spi::connect(|c| {
        let t = c.select(
            "SELECT id, session_id, sha256, sealed_key_id FROM legacy_backup.snapshots WHERE snapshot_key = $1",
            None,
            &[key.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some(Recorded {
            object_key: key.to_string(),
            object_id: r.get(1)?.unwrap_or_default(),
            session_id: r.get(2)?.unwrap_or_default(),
            sha256: r.get(3)?.unwrap_or_default(),
            sealed_key_id: r.get(4)?,
        }))
    })
}

/// Who a check from SQL is credited to in the audit log: `legacy_backup.actor`, else the role.
fn checker() -> String {
    crate::guc::actor().unwrap_or_else(crate::privilege::role_actor)
}

/// The object storage and keys for SQL functions; an unusable key is a configuration error.
fn storage_and_keys() -> LbResult<(settings::Storage, KeyRing)> {
    let storage = settings::sql_storage()?;
    let keys = storage.keys.clone().map_err(|e| {
        LbError::new(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, format!("the backup sealing key is unusable: {e}"))
            .hint("Fix LEGACY_BACKUP_KEY / LEGACY_BACKUP_KEY_PREVIOUS in the credentials file or the server's environment (docs/operations.md, Sealed backups).")
    })?;
    Ok((storage, keys))
}

/// A fetched object: trusted content, or why it is refused (raised as `LB010` by the SQL
/// wrapper).
pub enum Fetched {
    Trusted { body: Vec<u8>, finding: Finding },
    Refused(Refusal),
}

/// Downloads a backup object and opens it by the one rule of `backup::open_fetched`; then checks
/// it is JSON. `override_actor`: a partner admitting a plain object this database has no record
/// of (audited here).
pub fn fetch(key: &str, override_actor: Option<&str>) -> LbResult<Fetched> {
    if let Some(actor) = override_actor {
        crate::partner::require_partner(actor)?;
    }
    let (storage, keys) = storage_and_keys()?;
    let body = storage.backups.get_object(key)?.ok_or_else(|| {
        LbError::not_found(format!("object {key} does not exist in object storage"))
    })?;
    let recorded = recorded_at(key)?;
    let (body, finding) = match open_fetched(
        &keys,
        key,
        body,
        recorded.as_ref(),
        override_actor.is_some(),
    ) {
        Ok(opened) => opened,
        Err(refusal) => return Ok(Fetched::Refused(refusal)),
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(|e| {
        LbError::new(
            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            format!("object {key} is not valid JSON: {e}"),
        )
    })?;
    if let (Some(actor), Finding::Different(_)) = (override_actor, &finding) {
        let session = key.split('/').nth(1).unwrap_or_default().to_string();
        Spi::connect_mut(|client| {
            crate::app_audit_log::write(
                client,
                &session,
                actor,
                "SNAPSHOT_FETCHED_UNVERIFIED",
                &serde_json::json!({"snapshotKey": key, "sha256": crate::storage::seal::sha256_hex(&body), "bytes": body.len()}),
            )
        })?;
    }
    Ok(Fetched::Trusted { body, finding })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    snapshot_id: String,
    snapshot_key: String,
    result: &'static str,
    /// ok, unsealed, missing, mismatch (`backup::Finding::state`).
    state: &'static str,
    detail: String,
    expected_sha256: String,
    sealed_key_id: Option<String>,
    expected_bytes: i64,
    object_bytes: Option<usize>,
}

/// Downloads the snapshot's object and checks it by the scrub's rule (`backup::classify`).
/// Records the result; damage is reported here, and repaired by the worker's scrub.
pub fn verify(snapshot_id: &str) -> LbResult<Verification> {
    let (key, bytes) = Spi::connect(|c| -> LbResult<(String, i64)> {
        let t = c.select(
            "SELECT snapshot_key, bytes FROM legacy_backup.snapshots WHERE id = $1",
            None,
            &[snapshot_id.into()],
        )?;
        if t.is_empty() {
            return Err(LbError::not_found(format!(
                "snapshot \"{snapshot_id}\" does not exist"
            )));
        }
        let r = t.first();
        Ok((r.get(1)?.unwrap_or_default(), r.get(2)?.unwrap_or(0)))
    })?;
    let recorded = recorded_at(&key)?.ok_or_else(|| LbError::internal("snapshot vanished"))?;
    let (storage, keys) = storage_and_keys()?;
    // No lock is held here: the HTTP request runs before this function writes anything.
    let body = storage.backups.get_object(&key)?;
    let finding = classify(&keys, &recorded, body.as_deref());
    let result = finding.recorded_result();
    Spi::connect_mut(|c| record_check(c, BackupKind::Snapshot, snapshot_id, &finding, &checker()))?;
    Ok(Verification {
        snapshot_id: snapshot_id.to_string(),
        snapshot_key: key,
        result,
        state: finding.state(),
        detail: finding.detail(),
        expected_sha256: recorded.sha256,
        sealed_key_id: match &finding {
            Finding::Sealed { key_id } => Some(key_id.clone()),
            _ => None,
        },
        expected_bytes: bytes,
        object_bytes: body.map(|b| b.len()),
    })
}

/// One line of `legacy_backup_verify_all()` / `legacy_backup_verify_storage()`.
pub struct WalkRow {
    pub snapshot_key: String,
    pub session_id: String,
    pub state: &'static str,
    pub detail: String,
}

/// Every snapshot the database knows, checked in object storage (`backup::classify`, the scrub's
/// rule) and along its session's chain; then every object under `backups/` it does not know.
/// Check results are recorded as `legacy_snapshot_verify` records them.
pub fn verify_all() -> LbResult<Vec<WalkRow>> {
    let (storage, keys) = storage_and_keys()?;
    type Known = (
        (BackupKind, String),
        String,
        Recorded,
        Option<String>,
        bool,
        String,
        Option<String>,
    );
    // Snapshots in time order, then trail segments in sequence order, per session: each kind
    // is its own chain. (Format 3 and every trail segment carry the link.)
    let known: Vec<Known> = Spi::connect(|c| {
        let t = c.select(
            "SELECT 'snapshot' AS kind, id, session_id, snapshot_key, sha256, sealed_key_id, previous_sha256, \
                    format_version >= 3 AS linked, upload_state, verify_result, 'snapshot' AS chain, snapshot_at AS ord, 0 AS seq \
             FROM legacy_backup.snapshots \
             UNION ALL \
             SELECT 'trail', id, session_id, object_key, sha256, sealed_key_id, previous_sha256, \
                    true, upload_state, verify_result, 'trail-' || instance, created_at, sequence \
             FROM legacy_backup.trail_segments \
             ORDER BY session_id, chain, seq, ord, id",
            None,
            &[],
        )?;
        let mut rows = Vec::new();
        for r in t {
            let text = |i: usize| r.get::<String>(i).map(Option::unwrap_or_default);
            rows.push((
                (
                    BackupKind::from_name(&text(1)?).unwrap_or(BackupKind::Snapshot),
                    text(11)?,
                ),
                text(2)?,
                Recorded {
                    object_key: text(4)?,
                    object_id: text(2)?,
                    session_id: text(3)?,
                    sha256: text(5)?,
                    sealed_key_id: r.get(6)?,
                },
                r.get::<String>(7)?,
                r.get::<bool>(8)?.unwrap_or(false),
                text(9)?,
                r.get::<String>(10)?,
            ));
        }
        Ok::<_, LbError>(rows)
    })?;
    let listed = storage.backups.list_all("backups/", |_| {})?;
    let known_keys: std::collections::HashSet<&str> =
        known.iter().map(|k| k.2.object_key.as_str()).collect();
    let mut out = Vec::new();
    let mut previous: HashMap<(String, &str), String> = HashMap::new();
    for ((kind, chain), id, recorded, link, linked, upload_state, last_state) in &known {
        let expected_link = previous.insert(
            (recorded.session_id.clone(), chain.as_str()),
            recorded.sha256.clone(),
        );
        let row = |state: &'static str, detail: String| WalkRow {
            snapshot_key: recorded.object_key.clone(),
            session_id: recorded.session_id.clone(),
            state,
            detail,
        };
        if *linked && link != &expected_link {
            out.push(row(
                "broken_chain",
                format!(
                    "links to {}, but the session's previous {} is {}",
                    link.as_deref().unwrap_or("nothing"),
                    kind.name(),
                    expected_link.as_deref().unwrap_or("none")
                ),
            ));
            continue;
        }
        if upload_state != "uploaded" {
            out.push(row("pending", format!("not uploaded yet ({upload_state})")));
            continue;
        }
        let found = storage.backups.get_object(&recorded.object_key)?;
        let finding = classify(&keys, recorded, found.as_deref());
        Spi::connect_mut(|c| record_check(c, *kind, id, &finding, &checker()))?;
        let state = match (&finding, last_state.as_deref()) {
            (f, Some("repaired")) if f.is_intact() => "repaired",
            (f, _) => f.state(),
        };
        out.push(row(state, finding.detail()));
    }
    for object in listed {
        if !known_keys.contains(object.key.as_str()) {
            out.push(WalkRow {
                session_id: object.key.split('/').nth(1).unwrap_or_default().to_string(),
                detail: format!("{} bytes; this database has no record of it", object.size),
                snapshot_key: object.key,
                state: "unexpected",
            });
        }
    }
    Ok(out)
}

/// The same walk from object storage alone, for a database that was lost: every object under
/// `backups/`, per session in key (time) order; seals opened (the header must name the key the
/// object is at), chains followed (each `previousSha256` must be the sha256 of the object before
/// it: a deleted, inserted or reordered snapshot breaks it). Plain objects cannot be vouched for.
pub fn verify_storage() -> LbResult<Vec<WalkRow>> {
    let (storage, keys) = storage_and_keys()?;
    let mut listed: Vec<String> = storage
        .backups
        .list_all("backups/", |_| {})?
        .into_iter()
        .map(|o| o.key)
        .collect();
    listed.sort();
    let mut out = Vec::new();
    let mut previous: HashMap<(String, String), String> = HashMap::new();
    for key in listed {
        let session_id = key.split('/').nth(1).unwrap_or_default().to_string();
        let mut row = |state: &'static str, detail: String| {
            out.push(WalkRow {
                snapshot_key: key.clone(),
                session_id: session_id.clone(),
                state,
                detail,
            })
        };
        // Each chain apart: the session's snapshots, and each database's trail segments.
        let chain = if validate_snapshot_key(Some(&key)).is_ok() {
            "snapshot".to_string()
        } else if let Some((instance, _)) = crate::ids::trail_segment_sequence(&key) {
            format!("trail-{instance}")
        } else {
            row("unexpected", "not a key this extension writes".into());
            continue;
        };
        let Some(bytes) = storage.backups.get_object(&key)? else {
            row("missing", "listed, but gone when read".into());
            continue;
        };
        let (plaintext, sealed_detail) = if crate::storage::seal::is_sealed(&bytes) {
            match crate::storage::seal::open(&keys, &bytes, &key, None) {
                Ok(opened) if opened.context.session_id == session_id => (
                    opened.plaintext,
                    Some(format!("sealed with key {}", opened.key_id)),
                ),
                Ok(opened) => {
                    row(
                        "mismatch",
                        format!("sealed for session {:?}", opened.context.session_id),
                    );
                    continue;
                }
                Err(e) => {
                    row("mismatch", e.to_string());
                    continue;
                }
            }
        } else {
            (bytes, None)
        };
        let sha = crate::storage::seal::sha256_hex(&plaintext);
        let expected = previous.insert((session_id.clone(), chain), sha.clone());
        match crate::snapshot::format::chain_link(&plaintext) {
            Err(e) => row("mismatch", e),
            Ok(Some(link)) if link != expected => row(
                "broken_chain",
                format!(
                    "links to {}, but the object before it is {} (a snapshot deleted, inserted or reordered)",
                    link.as_deref().unwrap_or("nothing"),
                    expected.as_deref().unwrap_or("none")
                ),
            ),
            Ok(_) => match sealed_detail {
                Some(d) => row("ok", format!("{d}; seal, sha256 {sha} and chain verified")),
                None => row("unsealed", format!("plain (sha256 {sha}): cannot be vouched for without the database's record")),
            },
        }
    }
    Ok(out)
}

/// The same change of the log, in two databases (ids differ): over `s` (the rebuilt row) and the
/// log.
const SAME_CHANGE: &str = "EXISTS (SELECT 1 FROM @extschema@.category_assignment_logs l WHERE l.session_id = s.session_id \
     AND l.document_id = s.document_id AND l.changed_at = s.changed_at AND l.txid = s.txid)";

/// A session's audit trail rebuilt from object storage alone: its segments, in sequence, each
/// sealed and opening at its own key, numbered without a gap, and linked to the one before. With
/// `dry_run` false the rows missing here are inserted into `category_assignment_logs` (with this
/// database's ids), and the segments recorded, so shipping goes on from the last one. `Err(Refusal)`
/// (raised as LB010 by the SQL wrapper) when a segment is missing, forged, moved or out of order.
pub fn rebuild_trail(
    session_id: &str,
    actor: &str,
    dry_run: bool,
) -> LbResult<Result<serde_json::Value, Refusal>> {
    use crate::worker::trail::{segment_summary, TrailSegment, TRAIL_KIND};
    crate::partner::require_partner(actor)?;
    let (storage, keys) = storage_and_keys()?;
    let prefix = format!("backups/{session_id}/trail-");
    let mut listed: Vec<String> = storage
        .backups
        .list_all(&prefix, |_| {})?
        .into_iter()
        .map(|o| o.key)
        .collect();
    listed.sort();
    let refuse = |message: String| {
        Ok(Err(Refusal {
            message,
            detail: "A trail is rebuilt only from sealed segments that open at their own key, numbered from 1 without a gap, each linked to the one before.".into(),
        }))
    };
    if listed.is_empty() {
        return Err(LbError::not_found(format!(
            "no audit trail segments of session \"{session_id}\" in object storage"
        ))
        .hint("The worker ships the trail every legacy_backup.naptime; check legacy_backup.r2_backup_bucket and the credentials."));
    }
    // One chain per database that shipped the trail (its instance), each numbered from 1.
    let mut previous: HashMap<String, (i32, Option<String>)> = HashMap::new();
    let mut segments = Vec::new();
    let mut recorded = Vec::new();
    for key in &listed {
        let Some((instance, sequence)) = crate::ids::trail_segment_sequence(key) else {
            return refuse(format!("{key} is not a trail segment key"));
        };
        let (last, link) = previous.get(&instance).cloned().unwrap_or((0, None));
        if sequence != last + 1 {
            return refuse(format!(
                "segment {} of chain {instance} of the trail is missing: found {key} next",
                last + 1
            ));
        }
        let Some(bytes) = storage.backups.get_object(key)? else {
            return refuse(format!("{key} disappeared while it was read"));
        };
        let opened = match crate::storage::seal::open(&keys, &bytes, key, None) {
            Ok(opened) if opened.context.session_id == session_id => opened,
            Ok(opened) => {
                return refuse(format!(
                    "{key} was sealed for session {:?}",
                    opened.context.session_id
                ))
            }
            Err(e) => return refuse(format!("{key} is refused: {e}")),
        };
        let sha = crate::storage::seal::sha256_hex(&opened.plaintext);
        let segment: TrailSegment = match serde_json::from_slice(&opened.plaintext) {
            Ok(s) => s,
            Err(e) => return refuse(format!("{key} is not a trail segment: {e}")),
        };
        if segment.kind != TRAIL_KIND
            || segment.session_id != session_id
            || segment.sequence != sequence
        {
            return refuse(format!(
                "{key} holds segment {} of session {:?}",
                segment.sequence, segment.session_id
            ));
        }
        if segment.previous_sha256 != link {
            return refuse(format!(
                "{key} links to {}, but the segment before it is {} (a segment replaced or reordered)",
                segment.previous_sha256.as_deref().unwrap_or("nothing"),
                link.as_deref().unwrap_or("none")
            ));
        }
        recorded.push((
            key.clone(),
            instance.clone(),
            sha.clone(),
            link.clone(),
            opened.key_id.clone(),
            bytes.len() as i64,
            crate::storage::md5_hex(&bytes),
        ));
        previous.insert(instance, (sequence, Some(sha)));
        segments.push(segment);
    }
    let rows: Vec<&serde_json::Value> = segments.iter().flat_map(|s| s.rows.iter()).collect();
    let rows_json = serde_json::to_string(&rows).expect("rows serialize");
    // A row is the same change when session, document, time and transaction agree: ids are this
    // database's own (a fresh database numbers its own rows, its baseline first).
    let present = crate::read::one_with_args::<i64>(
        &crate::attach::sql(&format!(
            "SELECT count(*) FROM pg_catalog.jsonb_populate_recordset(NULL::@extschema@.category_assignment_logs, $1::jsonb) s \
             WHERE {SAME_CHANGE}"
        ))?,
        &[rows_json.as_str().into()],
    )?
    .unwrap_or(0);
    let mut report = json!({
        "sessionId": session_id,
        "dryRun": dry_run,
        "segments": segments.iter().map(segment_summary).collect::<Vec<_>>(),
        "rows": rows.len(),
        "alreadyPresent": present,
        "toInsert": rows.len() as i64 - present,
    });
    if dry_run {
        return Ok(Ok(report));
    }
    Spi::connect_mut(|client| -> LbResult<()> {
        // An xid before any id (the trail's shipping relies on it: worker/trail.rs).
        client.update("SELECT pg_catalog.pg_current_xact_id()", None, &[])?;
        crate::worker::trail::ensure_cursor(client)?;
        // Inserted with new ids, in their original order; `undone_by` then points at the new id
        // of the undo's own row. The new ids are shipped already (they are in these segments).
        let mapping = client
            .update(
                &crate::attach::sql(&format!(
                    "WITH s AS (SELECT * FROM pg_catalog.jsonb_populate_recordset(NULL::@extschema@.category_assignment_logs, $1::jsonb) s \
                                WHERE NOT {SAME_CHANGE}), \
                     i AS (INSERT INTO @extschema@.category_assignment_logs (session_id, document_id, old_category_id, new_category_id, \
                             old_status, new_status, old_categorized_by, new_categorized_by, old_categorized_at, new_categorized_at, \
                             changed_by, attribution, changed_at, source, txid, db_role) \
                           SELECT session_id, document_id, old_category_id, new_category_id, old_status, new_status, \
                             old_categorized_by, new_categorized_by, old_categorized_at, new_categorized_at, \
                             changed_by, attribution, changed_at, source, txid, db_role FROM s ORDER BY id \
                           RETURNING id, session_id, document_id, changed_at, txid) \
                     SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('old', s.id, 'new', i.id, 'undoneBy', s.undone_by)), '[]')::text \
                     FROM s JOIN i ON i.session_id = s.session_id AND i.document_id = s.document_id \
                                  AND i.changed_at = s.changed_at AND i.txid = s.txid"
                ))?,
                None,
                &[rows_json.as_str().into()],
            )?
            .first()
            .get_one::<String>()?
            .unwrap_or_else(|| "[]".into());
        let inserted = client
            .update(
                &crate::attach::sql(
                    "WITH m AS (SELECT (e->>'old')::bigint AS old_id, (e->>'new')::bigint AS new_id, (e->>'undoneBy')::bigint AS undone_by \
                                FROM pg_catalog.jsonb_array_elements($1::jsonb) e), \
                     u AS (UPDATE @extschema@.category_assignment_logs l SET undone_by = mu.new_id \
                           FROM m, m mu WHERE l.id = m.new_id AND mu.old_id = m.undone_by RETURNING 1), \
                     shipped AS (INSERT INTO legacy_backup.trail_shipped (log_id) \
                           SELECT new_id FROM m WHERE new_id > (SELECT floor FROM legacy_backup.trail_cursor) ON CONFLICT DO NOTHING RETURNING 1) \
                     SELECT count(*) FROM m",
                )?,
                None,
                &[mapping.as_str().into()],
            )?
            .first()
            .get_one::<i64>()?
            .unwrap_or(0);
        for (segment, (key, instance, sha, previous, key_id, object_bytes, etag)) in
            segments.iter().zip(&recorded)
        {
            client.update(
                "INSERT INTO legacy_backup.trail_segments (session_id, sequence, object_key, first_log_id, last_log_id, \
                   row_count, sha256, previous_sha256, bytes, upload_state, uploaded_at, etag, object_bytes, sealed_key_id, rebuilt, instance) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'uploaded', now(), $10, $11, $12, true, $13) \
                 ON CONFLICT (object_key) DO NOTHING",
                None,
                &[
                    session_id.into(),
                    segment.sequence.into(),
                    key.as_str().into(),
                    segment.first_log_id.into(),
                    segment.last_log_id.into(),
                    (segment.rows.len() as i32).into(),
                    sha.as_str().into(),
                    previous.as_deref().into(),
                    (serde_json::to_vec(segment).map(|b| b.len()).unwrap_or(0) as i64).into(),
                    etag.as_str().into(),
                    (*object_bytes).into(),
                    key_id.as_str().into(),
                    instance.as_str().into(),
                ],
            )?;
        }
        report["inserted"] = json!(inserted);
        crate::app_audit_log::write(client, session_id, actor, "AUDIT_TRAIL_REBUILT", &report)?;
        Ok(())
    })?;
    Ok(Ok(report))
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
fn snapshot_bytes(snapshot_id: &str) -> LbResult<Result<(Vec<u8>, String), Refusal>> {
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
        None => match fetch(&key, None)? {
            Fetched::Trusted { body, .. } => (body, format!("object storage ({key})")),
            // The body was pruned and the object fails verification: refused as LB010.
            Fetched::Refused(refusal) => return Ok(Err(refusal)),
        },
    };
    if hex::encode(Sha256::digest(&body)) != sha {
        return Err(LbError::new(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("snapshot {snapshot_id} does not match its sha256"),
        )
        .detail(format!("Source: {source}."))
        .hint("Verify it with legacy_snapshot_verify(); restore from another snapshot."));
    }
    Ok(Ok((body, source)))
}

/// `Err(Refusal)` when the body was pruned and the object fails verification
/// (`legacy_restore_snapshot` raises it as `LB010`); nothing is changed then.
pub fn restore_snapshot(
    snapshot_id: &str,
    actor: &str,
    dry_run: bool,
) -> LbResult<Result<RestoreReport, Refusal>> {
    crate::partner::require_partner(actor)?;
    let (bytes, source) = match snapshot_bytes(snapshot_id)? {
        Ok(found) => found,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let parsed = parse_snapshot(&bytes)?;
    restore(
        parsed,
        actor,
        dry_run,
        format!("snapshot {snapshot_id} from the {source}"),
        Some(snapshot_id),
    )
    .map(Ok)
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

//! The audit trail leaves the database: every cycle, the worker cuts the new rows of
//! `category_assignment_logs` into one segment per session, stored in
//! `legacy_backup.trail_segments`, then uploads the pending segments sealed and write-once to
//! `backups/{session}/trail-{sequence}.json` (`jobs::put_backup`, the snapshots' path). Each segment
//! carries the sha256 of the session's previous one (`previousSha256`), so a deleted, replaced or
//! reordered segment is visible from the objects alone.
//!
//! Which rows are new: every id at or below `trail_cursor.floor` is shipped, and those above it
//! that are shipped are listed in `trail_shipped`. A log row's transaction has its xid before the
//! row takes its id (it changed a document first; the rebuild takes one first), and ids are handed
//! out in order. So an id at or below the largest id a read saw was taken, with an xid, before that
//! read; the shipping transaction then takes its own xid X. Once the oldest running transaction is
//! at or past X, every one of those transactions has ended, and a read from then on sees every one
//! of their rows that committed: that cycle ships them, and the floor moves to that largest id.

use super::jobs::{in_transaction, put_backup, Runner, WORKER_ACTOR};
use crate::backup::{BackupKind, Finding, Recorded};
use pgrx::prelude::*;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

/// Log rows cut into segments per cycle at most (a long history after an upgrade ships over
/// several cycles).
const SHIP_BATCH: i64 = 20_000;

/// Segments uploaded per cycle at most.
const UPLOAD_BATCH: i64 = 20;

/// The format of a trail segment document.
pub const TRAIL_FORMAT_VERSION: i32 = 1;

/// A segment of a session's audit trail, as stored and uploaded.
#[derive(Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrailSegment {
    pub format_version: i32,
    pub kind: String,
    pub session_id: String,
    pub sequence: i32,
    pub previous_sha256: Option<String>,
    pub first_log_id: i64,
    pub last_log_id: i64,
    /// Rows of `category_assignment_logs`, as `to_jsonb` gives them.
    pub rows: Vec<serde_json::Value>,
}

/// The kind string of trail segment documents.
pub const TRAIL_KIND: &str = "auditTrail";

impl Runner {
    /// Cuts the new log rows into segments, then uploads pending segments. Returns whether more
    /// is waiting.
    pub fn ship_trail(&mut self) -> bool {
        let cut = in_transaction(|client| crate::privilege::bounded_subtransaction(|| cut(client)));
        let more_rows = match cut {
            Ok(Some(Ok(Ok(more)))) => more,
            Ok(Some(Ok(Err(e)))) => {
                warning!("legacy_backup worker: audit trail: cutting segments failed: {e}");
                false
            }
            Ok(Some(Err(e))) => {
                warning!("legacy_backup worker: audit trail: cutting segments failed: {e}");
                false
            }
            Ok(None) | Err(_) => false,
        };
        let uploaded = self.upload_segments();
        more_rows || uploaded >= UPLOAD_BATCH as usize
    }

    fn upload_segments(&mut self) -> usize {
        let pending = in_transaction(|client| {
            let t = client.select(
                "SELECT id, session_id, object_key, sha256, body FROM legacy_backup.trail_segments \
                 WHERE upload_state = 'pending' AND body IS NOT NULL ORDER BY session_id, sequence LIMIT $1",
                None,
                &[UPLOAD_BATCH.into()],
            )?;
            let mut out = Vec::new();
            for r in t {
                let text = |n: &str| r.get_by_name::<String, _>(n).map(Option::unwrap_or_default);
                out.push((
                    Recorded {
                        object_id: text("id")?,
                        session_id: text("session_id")?,
                        object_key: text("object_key")?,
                        sha256: text("sha256")?,
                        sealed_key_id: None,
                    },
                    r.get_by_name::<Vec<u8>, _>("body")?.unwrap_or_default(),
                ));
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        });
        let Ok(Some(Ok(pending))) = pending else {
            return 0;
        };
        let mut uploaded = 0;
        for (recorded, body) in pending {
            if super::shutdown_requested() {
                break;
            }
            let put = match self.storage() {
                Ok(storage) => put_backup(storage, &recorded, body, false),
                Err(e) => Err(e),
            };
            let id = recorded.object_id.clone();
            let outcome = match put {
                Ok(put) => in_transaction(|client| {
                    client
                        .update(
                            "UPDATE legacy_backup.trail_segments SET upload_state = 'uploaded', uploaded_at = now(), \
                                    etag = $2, object_bytes = $3, sealed_key_id = $4 WHERE id = $1",
                            None,
                            &[
                                id.as_str().into(),
                                put.etag.as_str().into(),
                                put.object_bytes.into(),
                                put.key_id.as_deref().into(),
                            ],
                        )
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
                Err(e) if e.damaged => {
                    // Something else is at this segment's key: an alarm, never an overwrite.
                    let finding = Finding::Different(e.message.clone());
                    in_transaction(|client| {
                        crate::privilege::bounded_subtransaction(|| {
                            crate::backup::record_check(
                                client,
                                BackupKind::TrailSegment,
                                &id,
                                &finding,
                                WORKER_ACTOR,
                            )
                            .map_err(|e| e.message)?;
                            client
                                .update(
                                    "UPDATE legacy_backup.trail_segments SET upload_state = 'failed' WHERE id = $1",
                                    None,
                                    &[id.as_str().into()],
                                )
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        })
                        .and_then(|r| r)
                    })
                }
                Err(e) => {
                    warning!(
                        "legacy_backup worker: audit trail: upload of {} failed, will retry: {}",
                        recorded.object_key,
                        e.message
                    );
                    break;
                }
            };
            if let Ok(Some(Ok(()))) = outcome {
                uploaded += 1;
                super::record_progress();
            }
        }
        uploaded
    }
}

/// One cycle's cut: reads the new rows, writes one segment per session, moves the cursor.
/// Returns whether rows were left for the next cycle.
fn cut(client: &mut pgrx::spi::SpiClient<'_>) -> Result<bool, String> {
    let spi = |e: pgrx::spi::SpiError| e.to_string();
    ensure_cursor(client).map_err(spi)?;
    // One statement: the rows, the largest visible id, and whether the floor may move.
    let read = crate::attach::sql(
        "WITH c AS (SELECT floor, pending_floor, pending_xid FROM legacy_backup.trail_cursor), \
         n AS (SELECT l.id, l.session_id, pg_catalog.to_jsonb(l) AS r FROM @extschema@.category_assignment_logs l, c \
               WHERE l.id > c.floor AND NOT EXISTS (SELECT 1 FROM legacy_backup.trail_shipped s WHERE s.log_id = l.id) \
               ORDER BY l.id LIMIT $1) \
         SELECT (SELECT count(*) FROM n) AS n, \
                (SELECT max(l.id) FROM @extschema@.category_assignment_logs l, c WHERE l.id > c.floor) AS max_id, \
                (SELECT c.pending_xid IS NOT NULL \
                        AND pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) >= c.pending_xid FROM c) AS advance, \
                (SELECT pg_catalog.json_agg(pg_catalog.json_build_object('id', id, 'sessionId', session_id, 'row', r) \
                        ORDER BY session_id, id) FROM n)::text AS rows",
    )
    .map_err(|e| e.message)?;
    let t = client
        .update(&read, None, &[SHIP_BATCH.into()])
        .map_err(spi)?;
    let r = t.first();
    let n: i64 = r.get_by_name("n").map_err(spi)?.unwrap_or(0);
    let max_id: Option<i64> = r.get_by_name("max_id").map_err(spi)?;
    let advance: bool = r.get_by_name("advance").map_err(spi)?.unwrap_or(false);
    let rows: Option<String> = r.get_by_name("rows").map_err(spi)?;
    let truncated = n >= SHIP_BATCH;

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct NewRow {
        id: i64,
        session_id: String,
        row: serde_json::Value,
    }
    let rows: Vec<NewRow> = match rows {
        Some(text) => serde_json::from_str(&text).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let mut by_session: BTreeMap<String, Vec<NewRow>> = BTreeMap::new();
    for row in rows {
        by_session
            .entry(row.session_id.clone())
            .or_default()
            .push(row);
    }
    for (session_id, rows) in by_session {
        // A session id that could not be part of a key is skipped (never written under another key).
        if crate::ids::validate_id("session_id", Some(&session_id)).is_err() {
            warning!("legacy_backup worker: audit trail: session id {session_id:?} cannot name an object; its rows stay in the database only");
        } else {
            write_segment(
                client,
                &session_id,
                &rows.iter().map(|r| (r.id, &r.row)).collect::<Vec<_>>(),
            )?;
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        client
            .update(
                "INSERT INTO legacy_backup.trail_shipped (log_id) SELECT pg_catalog.unnest($1::bigint[]) ON CONFLICT DO NOTHING",
                None,
                &[ids.into()],
            )
            .map_err(spi)?;
    }
    if !truncated {
        // pg_current_xact_id(): this transaction's xid, taken after the read if it had none.
        client
            .update(
                "UPDATE legacy_backup.trail_cursor SET \
                    floor = CASE WHEN $1 THEN pending_floor ELSE floor END, \
                    pending_floor = CASE WHEN $1 OR pending_xid IS NULL THEN $2 ELSE pending_floor END, \
                    pending_xid = CASE WHEN $2 IS NULL AND ($1 OR pending_xid IS NULL) THEN NULL \
                                       WHEN $1 OR pending_xid IS NULL THEN pg_catalog.pg_current_xact_id() ELSE pending_xid END",
                None,
                &[advance.into(), max_id.into()],
            )
            .map_err(spi)?;
        client
            .update(
                "DELETE FROM legacy_backup.trail_shipped WHERE log_id <= (SELECT floor FROM legacy_backup.trail_cursor)",
                None,
                &[],
            )
            .map_err(spi)?;
    }
    Ok(truncated)
}

/// The cursor's one row, made on first use (not at CREATE EXTENSION, so that a restored dump,
/// which brings its own row, does not collide with it).
pub fn ensure_cursor(client: &mut pgrx::spi::SpiClient<'_>) -> Result<(), pgrx::spi::SpiError> {
    client
        .update(
            "INSERT INTO legacy_backup.trail_cursor DEFAULT VALUES ON CONFLICT DO NOTHING",
            None,
            &[],
        )
        .map(|_| ())
}

/// Stores the next segment of a session's trail, linked to the one before.
fn write_segment(
    client: &mut pgrx::spi::SpiClient<'_>,
    session_id: &str,
    rows: &[(i64, &serde_json::Value)],
) -> Result<(), String> {
    let spi = |e: pgrx::spi::SpiError| e.to_string();
    let t = client
        .select(
            "SELECT i.id AS instance, s.sequence, s.sha256 FROM legacy_backup.instance i \
             LEFT JOIN LATERAL (SELECT sequence, sha256 FROM legacy_backup.trail_segments \
                                WHERE session_id = $1 AND instance = i.id ORDER BY sequence DESC LIMIT 1) s ON true",
            None,
            &[session_id.into()],
        )
        .map_err(spi)?;
    let r = t.first();
    let instance: String = r
        .get_by_name("instance")
        .map_err(spi)?
        .ok_or("legacy_backup.instance is empty")?;
    let last_sequence: i32 = r.get_by_name("sequence").map_err(spi)?.unwrap_or(0);
    let previous: Option<String> = r.get_by_name("sha256").map_err(spi)?;
    let sequence = last_sequence + 1;
    let segment = TrailSegment {
        format_version: TRAIL_FORMAT_VERSION,
        kind: TRAIL_KIND.into(),
        session_id: session_id.into(),
        sequence,
        previous_sha256: previous.clone(),
        first_log_id: rows.first().map(|r| r.0).unwrap_or(0),
        last_log_id: rows.last().map(|r| r.0).unwrap_or(0),
        rows: rows.iter().map(|r| r.1.clone()).collect(),
    };
    let body = serde_json::to_vec(&segment).map_err(|e| e.to_string())?;
    let sha256 = crate::storage::seal::sha256_hex(&body);
    client
        .update(
            "INSERT INTO legacy_backup.trail_segments \
               (session_id, sequence, object_key, first_log_id, last_log_id, row_count, body, sha256, previous_sha256, bytes, instance) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            None,
            &[
                session_id.into(),
                sequence.into(),
                crate::ids::trail_segment_key(session_id, &instance, sequence).into(),
                segment.first_log_id.into(),
                segment.last_log_id.into(),
                (rows.len() as i32).into(),
                body.as_slice().into(),
                sha256.as_str().into(),
                previous.as_deref().into(),
                (body.len() as i64).into(),
                instance.as_str().into(),
            ],
        )
        .map_err(spi)?;
    Ok(())
}

/// What a rebuild found, for its report (`recovery::rebuild_trail`).
pub fn segment_summary(segment: &TrailSegment) -> serde_json::Value {
    json!({"sequence": segment.sequence, "rows": segment.rows.len(), "firstLogId": segment.first_log_id, "lastLogId": segment.last_log_id})
}

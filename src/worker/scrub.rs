//! The scrub: the worker re-reads every uploaded backup object once per
//! `legacy_backup.scrub_interval`, checking presence, seal and sha256 (`backup::classify`).
//! - An object is due when its last check (or its upload) is an interval old, so each object is
//!   read at most once per interval, and the reads spread over the interval as the uploads did.
//! - A missing or different object is recorded (`verify_result`), written to the application's
//!   audit log as `R2_BACKUP_DAMAGED`, and turns health not ok.
//! - When the database still holds the body, the object is put back, sealed (`R2_BACKUP_REPAIRED`),
//!   and only then is its state good again.

use super::jobs::{put_backup, JobError, Runner, WORKER_ACTOR};
use crate::backup::{classify, BackupKind, Finding, Recorded};
use pgrx::prelude::*;
use serde_json::json;

/// Objects checked per cycle at most, so a large backlog (after an upgrade, a long outage) is
/// worked off over several cycles and never holds the worker from its jobs.
pub const SCRUB_BATCH: i64 = 20;

struct Due {
    kind: BackupKind,
    recorded: Recorded,
    has_body: bool,
}

impl Runner {
    /// Checks the objects that are due; returns how many were checked.
    pub fn scrub(&mut self) -> usize {
        let interval = crate::guc::scrub_interval().as_secs_f64();
        let due = super::jobs::in_transaction(|client| {
            let t = client.update(
                "SELECT * FROM ( \
                   SELECT 'snapshot' AS kind, id, session_id, snapshot_key AS object_key, sha256, sealed_key_id, \
                          body IS NOT NULL AS has_body, coalesce(verified_at, uploaded_at) AS last \
                   FROM legacy_backup.snapshots WHERE upload_state = 'uploaded' \
                   UNION ALL \
                   SELECT 'trail', id, session_id, object_key, sha256, sealed_key_id, body IS NOT NULL, coalesce(verified_at, uploaded_at) \
                   FROM legacy_backup.trail_segments WHERE upload_state = 'uploaded') o \
                 WHERE last + pg_catalog.make_interval(secs => $1) <= now() \
                 ORDER BY last, id LIMIT $2",
                None,
                &[interval.into(), SCRUB_BATCH.into()],
            )?;
            let mut due = Vec::new();
            for r in t {
                let text = |n: &str| r.get_by_name::<String, _>(n).map(Option::unwrap_or_default);
                due.push(Due {
                    kind: BackupKind::from_name(&text("kind")?).unwrap_or(BackupKind::Snapshot),
                    recorded: Recorded {
                        object_key: text("object_key")?,
                        object_id: text("id")?,
                        session_id: text("session_id")?,
                        sha256: text("sha256")?,
                        sealed_key_id: r.get_by_name("sealed_key_id")?,
                    },
                    has_body: r.get_by_name("has_body")?.unwrap_or(false),
                });
            }
            Ok::<_, pgrx::spi::SpiError>(due)
        });
        let due = match due {
            Ok(Some(Ok(due))) => due,
            Ok(Some(Err(e))) => {
                warning!("legacy_backup worker: scrub: cannot list due objects: {e}");
                return 0;
            }
            _ => return 0,
        };
        let mut checked = 0;
        for item in due {
            if super::shutdown_requested() {
                break;
            }
            match self.scrub_one(&item) {
                Ok(()) => checked += 1,
                Err(e) => {
                    // Object storage unreachable: tried again next cycle (the object stays due).
                    warning!(
                        "legacy_backup worker: scrub of {} failed: {}",
                        item.recorded.object_key,
                        e.message
                    );
                    break;
                }
            }
        }
        if checked > 0 {
            super::record_progress();
        }
        checked
    }

    fn scrub_one(&mut self, item: &Due) -> Result<(), JobError> {
        let storage = self.storage()?;
        let keys = storage
            .keys
            .as_ref()
            .map_err(|e| JobError::transient(format!("the backup sealing key is unusable: {e}")))?;
        let r = &item.recorded;
        let found = storage.backups.get_object(&r.object_key)?;
        let finding = classify(keys, r, found.as_deref());
        let id = r.object_id.clone();
        {
            let (id, finding, kind) = (id.clone(), finding.clone(), item.kind);
            record(move |client| {
                crate::backup::record_check(client, kind, &id, &finding, WORKER_ACTOR)
                    .map_err(|e| JobError::transient(e.message))
            })?;
        }
        if finding.is_intact() {
            return Ok(());
        }
        let detail = finding.detail();
        if !item.has_body {
            return Ok(()); // nothing to put back: health stays not ok
        }
        // Put it back from the database's body (write-once when missing; a different object is
        // not ours and is replaced).
        let table = item.kind.table();
        let body = super::jobs::in_transaction(|client| {
            client
                .select(
                    &format!("SELECT body FROM {table} WHERE id = $1"),
                    None,
                    &[id.as_str().into()],
                )?
                .first()
                .get_one::<Vec<u8>>()
        });
        let Ok(Some(Ok(Some(body)))) = body else {
            return Ok(());
        };
        let put = put_backup(storage, r, body, finding != Finding::Missing)?;
        let found = detail;
        record(move |client| {
            let t = client.update(
                &format!("UPDATE {table} SET verified_at = now(), verify_result = 'repaired', etag = $2, \
                        object_bytes = $3, sealed_key_id = $4 WHERE id = $1 RETURNING session_id, {key} AS object_key",
                        key = item.kind.key_column()),
                None,
                &[
                    id.as_str().into(),
                    put.etag.as_str().into(),
                    put.object_bytes.into(),
                    put.key_id.as_deref().into(),
                ],
            )?;
            if t.is_empty() {
                return Ok(());
            }
            let row = t.first();
            let session: String = row.get_by_name("session_id")?.unwrap_or_default();
            let key: String = row.get_by_name("object_key")?.unwrap_or_default();
            crate::app_audit_log::write(
                client,
                &session,
                WORKER_ACTOR,
                "R2_BACKUP_REPAIRED",
                &json!({"kind": item.kind.name(), "objectId": id, "snapshotKey": key, "found": found, "sealedKeyId": put.key_id, "objectBytes": put.object_bytes}),
            )
            .map_err(|e| JobError::transient(e.message))?;
            Ok(())
        })
    }
}

/// Runs a recording step in a worker transaction, its application-facing writes (audit rows) in
/// a bounded subtransaction.
fn record(
    f: impl FnOnce(&mut pgrx::spi::SpiClient<'_>) -> Result<(), JobError>,
) -> Result<(), JobError> {
    match super::jobs::in_transaction(|client| {
        crate::privilege::bounded_subtransaction(|| f(client))
    }) {
        Ok(Some(Ok(Ok(())))) => Ok(()),
        Ok(Some(Ok(Err(e)))) => Err(e),
        Ok(Some(Err(e))) => Err(JobError::transient(format!(
            "recording the check failed: {e}"
        ))),
        Ok(None) => Err(JobError::transient("extension not installed")),
        Err(e) => Err(JobError::transient(e)),
    }
}

impl From<pgrx::spi::SpiError> for JobError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        JobError::transient(e.to_string())
    }
}

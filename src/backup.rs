//! Evidence-grade backups: what an object in the backup bucket must be to count, one rule for
//! every reader (upload's write-once comparison, fetch, scrub, verify):
//! - a sealed object opens with one of the server's keys, and its header names exactly the key it
//!   was found at and, when the database knows it, the snapshot, session and sha256 recorded;
//! - a plain object counts only when the database records that key as plain (written before a key
//!   was configured, or by 0.4.0 and earlier) and its sha256 is the recorded one.
//!
//! The rules here are pure (`cargo test`); `worker::scrub` and `recovery` bring the bytes and the
//! database's record, and every one of them records what it found with `record_check`.

use crate::storage::seal::{self, Context, KeyRing, SealError};
use serde_json::json;

/// The two kinds of backup object, each with its table of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    /// A categorization snapshot (`legacy_backup.snapshots`).
    Snapshot,
    /// A segment of the audit trail (`legacy_backup.trail_segments`).
    TrailSegment,
}

impl BackupKind {
    pub fn table(self) -> &'static str {
        match self {
            BackupKind::Snapshot => "legacy_backup.snapshots",
            BackupKind::TrailSegment => "legacy_backup.trail_segments",
        }
    }

    pub fn key_column(self) -> &'static str {
        match self {
            BackupKind::Snapshot => "snapshot_key",
            BackupKind::TrailSegment => "object_key",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Snapshot => "snapshot",
            BackupKind::TrailSegment => "trail",
        }
    }

    pub fn from_name(name: &str) -> Option<BackupKind> {
        [BackupKind::Snapshot, BackupKind::TrailSegment]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// What the database records of a backup object.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub object_key: String,
    pub object_id: String,
    pub session_id: String,
    pub sha256: String,
    /// The key id it was uploaded sealed with; None for a plain upload (or not uploaded yet).
    pub sealed_key_id: Option<String>,
}

impl Recorded {
    pub fn context(&self) -> Context {
        Context {
            object_key: self.object_key.clone(),
            object_id: self.object_id.clone(),
            session_id: self.session_id.clone(),
            sha256: self.sha256.clone(),
        }
    }
}

/// What was found at a recorded object's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Sealed, and opens to the recorded content.
    Sealed {
        key_id: String,
    },
    /// Plain, the recorded content, and recorded as plain.
    Plain,
    Missing,
    /// Anything else; the reason names what was found, never content.
    Different(String),
}

impl Finding {
    pub fn is_intact(&self) -> bool {
        matches!(self, Finding::Sealed { .. } | Finding::Plain)
    }

    /// The state `legacy_backup_verify_all()` and the `legacy_snapshots` view show.
    pub fn state(&self) -> &'static str {
        match self {
            Finding::Sealed { .. } => "ok",
            Finding::Plain => "unsealed",
            Finding::Missing => "missing",
            Finding::Different(_) => "mismatch",
        }
    }

    /// What a check records (`verify_result`) and `legacy_snapshot_verify` returns as `result`.
    pub fn recorded_result(&self) -> &'static str {
        match self {
            Finding::Sealed { .. } | Finding::Plain => "verified",
            Finding::Missing => "missing",
            Finding::Different(_) => "mismatch",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Finding::Sealed { key_id } => {
                format!("sealed with key {key_id}; seal and sha256 verified")
            }
            Finding::Plain => "plain (written before a key was configured); sha256 verified".into(),
            Finding::Missing => "the object is not in object storage".into(),
            Finding::Different(why) => why.clone(),
        }
    }
}

/// Checks the bytes found at a recorded object's key.
pub fn classify(keys: &KeyRing, recorded: &Recorded, found: Option<&[u8]>) -> Finding {
    let Some(bytes) = found else {
        return Finding::Missing;
    };
    match seal::open(keys, bytes, &recorded.object_key, Some(&recorded.context())) {
        Ok(opened) => Finding::Sealed {
            key_id: opened.key_id,
        },
        Err(SealError::NotSealed) => {
            let sha = seal::sha256_hex(bytes);
            match (&recorded.sealed_key_id, sha == recorded.sha256) {
                (None, true) => Finding::Plain,
                (Some(id), true) => Finding::Different(format!(
                    "a plain copy where a sealed object (key {id}) was uploaded: replaced by a holder of the bucket's credentials"
                )),
                (_, false) => Finding::Different(format!(
                    "a plain object of {} bytes with sha256 {sha}, not the recorded {}",
                    bytes.len(),
                    recorded.sha256
                )),
            }
        }
        Err(e) => Finding::Different(e.to_string()),
    }
}

/// Why a fetched object is refused (SQLSTATE LB010).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub detail: String,
}

/// The content of an object fetched from `object_key`, when it may be trusted: sealed and
/// opening (checked against `recorded` when the database knows the key), or plain with the
/// recorded sha256. `allow_plain` (a partner's audited override) also admits a plain object the
/// database has no record of (the application's own older files); never one that contradicts the
/// record, and never a sealed one that fails.
pub fn open_fetched(
    keys: &KeyRing,
    object_key: &str,
    bytes: Vec<u8>,
    recorded: Option<&Recorded>,
    allow_plain: bool,
) -> Result<(Vec<u8>, Finding), Refusal> {
    let refuse = |message: String, detail: String| Refusal { message, detail };
    if seal::is_sealed(&bytes) {
        let expected = recorded.map(Recorded::context);
        return match seal::open(keys, &bytes, object_key, expected.as_ref()) {
            Ok(opened) => Ok((
                opened.plaintext,
                Finding::Sealed {
                    key_id: opened.key_id,
                },
            )),
            Err(e) => Err(refuse(
                format!("object {object_key} is refused: {e}"),
                "A sealed object must open with one of the server's keys and name the key, snapshot and session it was written for.".into(),
            )),
        };
    }
    match recorded {
        Some(r) => match classify(keys, r, Some(&bytes)) {
            Finding::Plain => Ok((bytes, Finding::Plain)),
            Finding::Different(why) => Err(refuse(
                format!("object {object_key} is refused: {why}"),
                "The database records another content for this key.".into(),
            )),
            other => Err(refuse(
                format!("object {object_key} is refused: {}", other.detail()),
                String::new(),
            )),
        },
        None if allow_plain => Ok((bytes, Finding::Different("plain, admitted by override".into()))),
        None => Err(refuse(
            format!("object {object_key} is refused: it is plain and the database records no sha256 for it"),
            "Only sealed objects, or plain ones whose sha256 this database recorded, are trusted.".into(),
        )),
    }
}

/// Records a check of a snapshot's object, by whoever made it (the scrub, verify, verify_all):
/// its time and state (`verified`, `missing`, `mismatch`; a repaired object stays `repaired` while
/// it verifies), and an `R2_BACKUP_DAMAGED` row in the application's audit log when an object is
/// first found missing or different. Returns whether the object was damaged.
pub fn record_check(
    client: &mut pgrx::spi::SpiClient<'_>,
    kind: BackupKind,
    object_id: &str,
    finding: &Finding,
    actor: &str,
) -> crate::error::LbResult<()> {
    let state = finding.recorded_result();
    let t = client.update(
        &format!(
            "WITH old AS (SELECT verify_result FROM {table} WHERE id = $1) \
             UPDATE {table} s SET verified_at = pg_catalog.now(), \
                    verify_result = CASE WHEN $2 = 'verified' AND old.verify_result = 'repaired' THEN 'repaired' ELSE $2 END \
             FROM old WHERE s.id = $1 \
             RETURNING s.session_id, s.{key} AS object_key, old.verify_result IS DISTINCT FROM $2 AND $2 <> 'verified' AS newly_damaged",
            table = kind.table(),
            key = kind.key_column()
        ),
        None,
        &[object_id.into(), state.into()],
    )?;
    if t.is_empty() {
        return Ok(());
    }
    let r = t.first();
    let session: String = r.get_by_name("session_id")?.unwrap_or_default();
    let key: String = r.get_by_name("object_key")?.unwrap_or_default();
    if r.get_by_name::<bool, _>("newly_damaged")? == Some(true) {
        crate::app_audit_log::write(
            client,
            &session,
            actor,
            "R2_BACKUP_DAMAGED",
            &json!({"kind": kind.name(), "objectId": object_id, "snapshotKey": key, "state": finding.state(), "found": finding.detail()}),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::seal::{seal, sha256_hex, Key};

    const BODY: &[u8] = br#"{"formatVersion":3}"#;

    fn recorded(sealed: Option<&str>) -> Recorded {
        Recorded {
            object_key: "backups/s1/categorization-2025-12-09T10-20-30-123Z.json".into(),
            object_id: "snap-1".into(),
            session_id: "s1".into(),
            sha256: sha256_hex(BODY),
            sealed_key_id: sealed.map(str::to_string),
        }
    }

    #[test]
    fn classify_tells_every_case_apart() {
        let key = Key::from_bytes([3; 32]);
        let ring = KeyRing::with_current(key.clone());
        let r = recorded(Some(key.id()));
        let sealed = seal(&key, &r.context(), BODY);
        assert_eq!(
            classify(&ring, &r, Some(&sealed)),
            Finding::Sealed {
                key_id: key.id().into()
            }
        );
        assert_eq!(classify(&ring, &r, None), Finding::Missing);
        // A plain copy of the true content where a sealed one was uploaded: a downgrade.
        assert!(
            matches!(classify(&ring, &r, Some(BODY)), Finding::Different(w) if w.contains("plain copy"))
        );
        let plain = recorded(None);
        assert_eq!(classify(&ring, &plain, Some(BODY)), Finding::Plain);
        assert!(matches!(
            classify(&ring, &plain, Some(b"{}")),
            Finding::Different(_)
        ));
        // The other session's sealed object swapped in.
        let other = Recorded {
            session_id: "s2".into(),
            object_key: "backups/s2/categorization-2025-12-09T10-20-30-123Z.json".into(),
            ..r.clone()
        };
        let swapped = seal(&key, &other.context(), BODY);
        assert!(
            matches!(classify(&ring, &r, Some(&swapped)), Finding::Different(w) if w.contains("moved or replayed"))
        );
    }

    #[test]
    fn fetching_opens_only_what_can_be_trusted() {
        let key = Key::from_bytes([4; 32]);
        let ring = KeyRing::with_current(key.clone());
        let r = recorded(Some(key.id()));
        let sealed = seal(&key, &r.context(), BODY);
        // From storage alone (no record) a sealed object opens; with the record too.
        assert_eq!(
            open_fetched(&ring, &r.object_key, sealed.clone(), None, false)
                .unwrap()
                .0,
            BODY
        );
        assert!(open_fetched(&ring, &r.object_key, sealed.clone(), Some(&r), false).is_ok());
        // Replayed under another key.
        let later = "backups/s1/categorization-2025-12-10T10-20-30-123Z.json";
        assert!(open_fetched(&ring, later, sealed.clone(), None, true).is_err());
        // A forged plain document: refused, unless a partner overrides for an unrecorded key.
        assert!(open_fetched(&ring, later, BODY.to_vec(), None, false).is_err());
        assert!(open_fetched(&ring, later, BODY.to_vec(), None, true).is_ok());
        // A plain object where a sealed one was recorded is never admitted, override or not.
        assert!(open_fetched(&ring, &r.object_key, BODY.to_vec(), Some(&r), true).is_err());
        // Recorded plain, matching: admitted without override.
        let plain = recorded(None);
        assert!(open_fetched(&ring, &plain.object_key, BODY.to_vec(), Some(&plain), false).is_ok());
        assert!(open_fetched(
            &ring,
            &plain.object_key,
            b"{}".to_vec(),
            Some(&plain),
            false
        )
        .is_err());
        // Without any key, a sealed object cannot be opened.
        assert!(open_fetched(&KeyRing::default(), &r.object_key, sealed, None, false).is_err());
    }
}

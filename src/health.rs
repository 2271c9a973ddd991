//! Whether protection is active, for a DBA: `legacy_backup_health()`. Each check reads the
//! catalog or the extension's tables; nothing is stored.

use crate::attach::{
    extension_schema, missing_session_columns, missing_tables, trigger_state,
    triggers_of_installed_version, TriggerState, REQUIRED_TABLES, SESSION_COLUMNS,
};
use crate::error::LbResult;
use pgrx::prelude::*;

pub struct HealthCheck {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// What a DBA needs to know to trust that protection is active.
pub fn health() -> LbResult<Vec<HealthCheck>> {
    let mut checks = Vec::new();
    let schema = extension_schema()?;
    let missing = missing_tables()?;
    for table in REQUIRED_TABLES {
        let present = !missing.iter().any(|m| m == table);
        checks.push(HealthCheck {
            check: format!("table {table}"),
            ok: present,
            detail: if present {
                format!("found in schema {schema}")
            } else {
                format!("missing from schema {schema}")
            },
        });
    }
    if !missing.iter().any(|m| m == "legacy_import_sessions") {
        let missing_columns = missing_session_columns()?;
        for (column, _) in SESSION_COLUMNS {
            let present = !missing_columns.contains(column);
            checks.push(HealthCheck {
                check: format!("column legacy_import_sessions.{column}"),
                ok: present,
                detail: if present {
                    "present".into()
                } else {
                    "missing: run legacy_backup_attach()".into()
                },
            });
        }
    }
    if missing.is_empty() {
        for trigger @ (name, _, table, _, _) in &triggers_of_installed_version()? {
            let state = trigger_state(trigger)?.unwrap_or(TriggerState::Missing);
            let ok = state == TriggerState::Intact;
            checks.push(HealthCheck {
                check: format!("trigger {table}.{name}"),
                ok,
                detail: if ok {
                    state.describe()
                } else {
                    format!("{}: run legacy_backup_attach()", state.describe())
                },
            });
        }
        for (trigger, problem) in crate::attach::misplaced_triggers()? {
            checks.push(HealthCheck {
                check: format!("trigger {trigger}"),
                ok: false,
                detail: problem,
            });
        }
        // Anything that makes the extension refuse to read the application's tables.
        for (object, problem) in crate::attach::structure_problems()? {
            checks.push(HealthCheck {
                check: format!("structure {object}"),
                ok: false,
                detail: problem,
            });
        }
    }
    // The event trigger can be disabled (ALTER EVENT TRIGGER … DISABLE); say so.
    for (guard, what) in crate::guard::EVENT_TRIGGERS {
        let enabled = crate::read::one_with_args::<bool>(
            "SELECT count(*) = 1 FROM pg_catalog.pg_event_trigger WHERE evtname = $1 AND evtenabled <> 'D'",
            &[(*guard).into()],
        )?
        .unwrap_or(false);
        checks.push(HealthCheck {
            check: format!("event trigger {guard}"),
            ok: enabled,
            detail: if enabled {
                (*what).to_string()
            } else {
                format!("missing or disabled: ALTER EVENT TRIGGER {guard} ENABLE")
            },
        });
    }
    // Nothing in the extension relies on the schema being closed (every name is qualified), but
    // a schema anyone may create objects in is a standing invitation; say so.
    let public_create = crate::read::one_with_args::<bool>(
        "SELECT pg_catalog.has_schema_privilege('public', $1, 'CREATE')",
        &[schema.as_str().into()],
    )?
    .unwrap_or(false);
    checks.push(HealthCheck {
        check: "schema privileges".into(),
        ok: !public_create,
        detail: if public_create {
            format!("PUBLIC may create objects in schema {schema}: REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC")
        } else {
            format!("only named roles may create objects in schema {schema}")
        },
    });
    checks.push(upload_lag()?);
    checks.push(sealing_key());
    checks.push(damaged_backups()?);
    let workers = crate::read::one::<i64>(
        "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'legacy_backup worker'",
    )?
    .unwrap_or(0);
    let worker_db = crate::guc::text(&crate::guc::DATABASE);
    let this_db =
        crate::read::one::<String>("SELECT current_database()::text")?.unwrap_or_default();
    let stalled_since = (workers > 0).then(worker_stalled_since).flatten();
    // SAFETY: reads shared memory state.
    let standby = unsafe { pg_sys::RecoveryInProgress() };
    checks.push(HealthCheck {
        check: "background worker".into(),
        ok: standby || (workers > 0 && worker_db == this_db && stalled_since.is_none()),
        detail: match (workers > 0, worker_db == this_db, stalled_since) {
            _ if standby => "this server is a standby: the worker runs on the primary, and starts here when it is promoted".into(),
            (true, true, None) => "running".into(),
            (true, true, Some(since)) => format!(
                "running, but it has finished no transaction since {since} (stalled: application code on the tables it writes, or a lock; see the legacy_backup_jobs view and the server log)"
            ),
            (true, false, _) => format!(
                "running, but for database \"{worker_db}\" (legacy_backup.database), not this one"
            ),
            (false, _, _) => {
                "not running: add legacy_backup to shared_preload_libraries and restart".into()
            }
        },
    });
    let failed =
        crate::read::one::<i64>("SELECT count(*) FROM legacy_backup.jobs WHERE state = 'failed'")?
            .unwrap_or(0);
    checks.push(HealthCheck {
        check: "failed jobs".into(),
        ok: failed == 0,
        detail: format!("{failed} failed job(s); see the legacy_backup_jobs view"),
    });
    let preloaded =
        crate::read::one::<String>("SELECT current_setting('shared_preload_libraries')")?
            .unwrap_or_default()
            .split(',')
            .any(|lib| lib.trim().trim_matches('"') == "legacy_backup");
    checks.push(HealthCheck {
        check: "shared_preload_libraries".into(),
        ok: preloaded,
        detail: if preloaded {
            "legacy_backup is preloaded".into()
        } else {
            "legacy_backup is not in shared_preload_libraries: the background worker cannot run"
                .into()
        },
    });
    Ok(checks)
}

/// Uploads keep up: not ok while the oldest snapshot waiting for its upload has waited longer
/// than `legacy_backup.max_upload_lag`, named with the time it was taken.
fn upload_lag() -> LbResult<HealthCheck> {
    let max_lag = crate::guc::max_upload_lag();
    let row = Spi::connect(|client| {
        let rows = client.select(
            "SELECT count(*) OVER (), id, session_id, \
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                    statement_timestamp() - created_at > pg_catalog.make_interval(secs => $1) \
             FROM (SELECT id, session_id, created_at FROM legacy_backup.snapshots WHERE upload_state <> 'uploaded' \
                   UNION ALL \
                   SELECT object_key, session_id, created_at FROM legacy_backup.trail_segments WHERE upload_state <> 'uploaded') o \
             ORDER BY created_at, id LIMIT 1",
            None,
            &[max_lag.as_secs_f64().into()],
        )?;
        if rows.is_empty() {
            return Ok::<_, crate::error::LbError>(None);
        }
        let r = rows.first();
        Ok(Some((
            r.get::<i64>(1)?.unwrap_or(0),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?.unwrap_or_default(),
            r.get::<String>(4)?.unwrap_or_default(),
            r.get::<bool>(5)?.unwrap_or(false),
        )))
    })?;
    let limit = crate::guc::text(&crate::guc::MAX_UPLOAD_LAG);
    Ok(match row {
        None => HealthCheck {
            check: "snapshots awaiting upload".into(),
            ok: true,
            detail: "every snapshot is in object storage".into(),
        },
        Some((count, id, session, since, late)) => HealthCheck {
            check: "snapshots awaiting upload".into(),
            ok: !late,
            detail: format!(
                "{count} snapshot(s) or trail segment(s) not yet in object storage; the oldest, {id} of session {session}, waits since {since}{}",
                if late {
                    format!(", longer than legacy_backup.max_upload_lag ({limit}): see the legacy_backup_jobs view")
                } else {
                    String::new()
                }
            ),
        },
    })
}

/// When the worker last made progress, if that is longer ago than a healthy cycle can take:
/// a few naptimes, plus one request and one bounded statement.
fn worker_stalled_since() -> Option<String> {
    let last = crate::worker::last_progress()?;
    let allowed =
        crate::guc::naptime() * 3 + crate::guc::http_timeout() + crate::guc::job_timeout();
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    (now - last > allowed.as_micros() as i64).then(|| {
        // SAFETY: timestamptz_to_str formats into a static buffer, copied at once.
        unsafe { std::ffi::CStr::from_ptr(pg_sys::timestamptz_to_str(last)) }
            .to_string_lossy()
            .into_owned()
    })
}

/// Backups are sealed: a usable current key (`LEGACY_BACKUP_KEY`). Without one, uploads go on
/// in plain form (losing a backup is worse than a plain one), and health says so.
fn sealing_key() -> HealthCheck {
    let (ok, detail) = match crate::worker::settings::key_ring_from_settings() {
        Ok(ring) => match ring.current() {
            Some(key) => (
                true,
                format!(
                    "new backups are sealed with key {}; {} key(s) open old ones",
                    key.id(),
                    ring.ids().len()
                ),
            ),
            None => (false, "no LEGACY_BACKUP_KEY: backups are uploaded in plain form, readable and forgeable by anyone holding the bucket's credentials (docs/operations.md, Sealed backups)".into()),
        },
        Err(e) => (false, format!("unusable, nothing is uploaded until it is fixed: {e}")),
    };
    HealthCheck {
        check: "backup sealing key".into(),
        ok,
        detail,
    }
}

/// No backup object (snapshot or trail segment) found missing or different by its last check
/// (the scrub, verify) and not repaired since, and no trail segment whose write-once upload found
/// another object at its key.
fn damaged_backups() -> LbResult<HealthCheck> {
    let (count, first) = Spi::connect(|c| {
        let t = c.select(
            "SELECT count(*) OVER (), k || ' (' || verify_result || ')' FROM ( \
               SELECT snapshot_key AS k, verify_result, verified_at FROM legacy_backup.snapshots \
               UNION ALL SELECT object_key, verify_result, verified_at FROM legacy_backup.trail_segments \
               UNION ALL SELECT object_key, 'upload refused', created_at FROM legacy_backup.trail_segments WHERE upload_state = 'failed') o \
             WHERE verify_result IN ('missing', 'mismatch', 'upload refused') ORDER BY verified_at LIMIT 1",
            None,
            &[],
        )?;
        if t.is_empty() {
            return Ok::<_, crate::error::LbError>((0, String::new()));
        }
        let r = t.first();
        Ok((
            r.get::<i64>(1)?.unwrap_or(0),
            r.get::<String>(2)?.unwrap_or_default(),
        ))
    })?;
    Ok(HealthCheck {
        check: "backup objects".into(),
        ok: count == 0,
        detail: if count == 0 {
            format!(
                "no damage found; each object is re-read every legacy_backup.scrub_interval ({})",
                crate::guc::text(&crate::guc::SCRUB_INTERVAL)
            )
        } else {
            format!("{count} backup object(s) missing or not as written, e.g. {first}; the scrub puts back what the database still holds (see legacy_backup_verify_all() and the R2_BACKUP_DAMAGED audit rows)")
        },
    })
}

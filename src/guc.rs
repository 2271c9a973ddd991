//! Settings (GUCs). Each one is documented in the settings table of docs/operations.md.
//!
//! Durations are strings in PostgreSQL's own interval notation (`'1s'`, `'7 days'`), checked when
//! set: a value that is not an interval, or is out of its range, is refused with a clear message.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// `legacy_backup.actor`: the application user (users.id) behind the current transaction.
/// The application sets it with `SET LOCAL legacy_backup.actor = '<user id>'`.
pub static ACTOR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Where a change comes from, as recorded in the audit trail. Superuser-only, so the application
/// cannot pass its own changes off as undo or restore; the extension's functions set it locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum ChangeSource {
    #[name = c"app"]
    App,
    #[name = c"undo"]
    Undo,
    #[name = c"restore"]
    Restore,
    #[name = c"baseline"]
    Baseline,
    /// The worker marking a session cleaned up: the only writer `cleaned_up_at` accepts.
    #[name = c"cleanup"]
    Cleanup,
}

pub static CHANGE_SOURCE: GucSetting<ChangeSource> =
    GucSetting::<ChangeSource>::new(ChangeSource::App);

/// `legacy_backup.undo_window`: how far back `legacy_undo_last_categorization` may reach.
pub static UNDO_WINDOW: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"24 hours"));

/// `legacy_backup.max_snapshot_age`: the newest snapshot must be younger than this to export.
pub static MAX_SNAPSHOT_AGE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1 hour"));

/// `legacy_backup.cleanup_delay`: how long after export the R2 cleanup is scheduled.
pub static CLEANUP_DELAY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"7 days"));

/// `legacy_backup.skip_snapshot_check`: export without a fresh snapshot; honoured only for
/// superusers and members of legacy_backup_admin, and always audited.
pub static SKIP_SNAPSHOT_CHECK: GucSetting<bool> = GucSetting::<bool>::new(false);

/// `legacy_backup.allow_drop`: confirms a DROP EXTENSION that would drop snapshots and the log.
pub static ALLOW_DROP: GucSetting<bool> = GucSetting::<bool>::new(false);

/// `legacy_backup.cleanup_prefixes`: what a session's cleanup deletes (the application's three
/// key layouts). Reload-only, so the worker and the partner's preview read the same list.
pub static CLEANUP_PREFIXES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(
    Some(c"pst/{sessionId}/, documents/{sessionId}/, legacy-import/{sessionId}/"),
);

/// `legacy_backup.partner_roles`: the `users.role` values the partner-only actions admit.
pub static PARTNER_ROLES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"Partner, BusinessOwner"));

/// `legacy_backup.cleanup_wait`: how long legacy_cleanup_session waits for the worker.
pub static CLEANUP_WAIT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"60s"));
pub static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
pub static NAPTIME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"10s"));
pub static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static SNAPSHOT_RETENTION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"30 days"));
pub static HTTP_TIMEOUT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"60s"));
/// `legacy_backup.job_timeout`: the longest any one statement of the worker may run (and wait
/// for a lock), application code it fires included.
pub static JOB_TIMEOUT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"30s"));
/// `legacy_backup.max_upload_lag`: health is not ok while a snapshot waits longer than this.
pub static MAX_UPLOAD_LAG: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"15min"));
pub static R2_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static R2_ACCOUNT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static R2_BUCKET: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static R2_REGION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static R2_ACCESS_KEY_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Never shown to non-superusers: not in SHOW ALL, not in pg_settings, not readable by SHOW.
pub static R2_SECRET_ACCESS_KEY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static R2_CREDENTIALS_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
/// `legacy_backup.r2_backup_bucket`: where `backups/` goes (default: `r2_bucket`); a bucket the
/// application's token cannot reach.
pub static R2_BACKUP_BUCKET: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `legacy_backup.scrub_interval`: every backup object is re-read once per this interval.
pub static SCRUB_INTERVAL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"7 days"));

const SECOND_US: i64 = 1_000_000;
const DAY_US: i64 = 86_400 * SECOND_US;

/// Approximate length of an interval in microseconds (a month counts 30 days).
fn interval_micros(iv: &pg_sys::Interval) -> i128 {
    iv.time as i128 + iv.day as i128 * DAY_US as i128 + iv.month as i128 * 30 * DAY_US as i128
}

/// Parses text with PostgreSQL's interval input function; None if it is not an interval.
fn parse_interval(text: &CStr) -> Option<pg_sys::Interval> {
    let text = text.to_owned();
    PgTryBuilder::new(move || unsafe {
        // SAFETY: interval_in takes (cstring, oid, typmod) and returns a palloc'd Interval.
        let datum = pgrx::direct_function_call_as_datum(
            pg_sys::interval_in,
            &[
                text.as_c_str().into_datum(),
                pg_sys::InvalidOid.into_datum(),
                (-1i32).into_datum(),
            ],
        )?;
        Some(*datum.cast_mut_ptr::<pg_sys::Interval>())
    })
    .catch_others(|_| None)
    .execute()
}

/// Checks a duration setting against [min, max]; sets the GUC error detail when it fails.
fn check_duration(
    newval: *mut *mut std::ffi::c_char,
    min_us: i64,
    max_us: i64,
    range: &str,
) -> bool {
    // SAFETY: GUC passes a valid pointer to a NUL-terminated string (or NULL for no value).
    let text = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return false;
        } else {
            CStr::from_ptr(*newval)
        }
    };
    let problem = match parse_interval(text) {
        None => Some(format!(
            "\"{}\" is not an interval; use PostgreSQL's notation, e.g. '30s' or '7 days'",
            text.to_string_lossy()
        )),
        Some(iv) => {
            let us = interval_micros(&iv);
            (us < min_us as i128 || us > max_us as i128)
                .then(|| format!("it must be between {range}"))
        }
    };
    match problem {
        None => true,
        Some(detail) => {
            let detail = CString::new(detail).unwrap_or_default();
            // SAFETY: GUC reports this palloc'd string with its "invalid value" error.
            unsafe { pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr()) };
            false
        }
    }
}

/// One GUC check hook per duration setting: a hook cannot know which setting it checks.
macro_rules! duration_check_hook {
    ($name:ident, $min:expr, $max:expr, $range:expr) => {
        #[pg_guard]
        unsafe extern "C-unwind" fn $name(
            newval: *mut *mut std::ffi::c_char,
            _extra: *mut *mut std::ffi::c_void,
            _source: pg_sys::GucSource::Type,
        ) -> bool {
            check_duration(newval, $min, $max, $range)
        }
    };
}

duration_check_hook!(
    check_undo_window,
    SECOND_US,
    366 * DAY_US,
    "1 second and 366 days"
);
duration_check_hook!(
    check_max_snapshot_age,
    SECOND_US,
    30 * DAY_US,
    "1 second and 30 days"
);
duration_check_hook!(
    check_cleanup_delay,
    0,
    3660 * DAY_US,
    "0 seconds and 3660 days"
);
duration_check_hook!(
    check_naptime,
    SECOND_US,
    3600 * SECOND_US,
    "1 second and 1 hour"
);
duration_check_hook!(
    check_retention,
    3600 * SECOND_US,
    3660 * DAY_US,
    "1 hour and 3660 days"
);
duration_check_hook!(
    check_http_timeout,
    SECOND_US,
    3600 * SECOND_US,
    "1 second and 1 hour"
);
duration_check_hook!(
    check_job_timeout,
    SECOND_US,
    3600 * SECOND_US,
    "1 second and 1 hour"
);
duration_check_hook!(
    check_max_upload_lag,
    SECOND_US,
    30 * DAY_US,
    "1 second and 30 days"
);
duration_check_hook!(
    check_scrub_interval,
    SECOND_US,
    366 * DAY_US,
    "1 second and 366 days"
);
duration_check_hook!(
    check_cleanup_wait,
    0,
    3600 * SECOND_US,
    "0 seconds and 1 hour"
);

/// Checks a list setting with its parser; sets the GUC error detail when it fails.
fn check_list(
    newval: *mut *mut std::ffi::c_char,
    parse: fn(&str) -> Result<Vec<String>, String>,
) -> bool {
    // SAFETY: GUC passes a valid pointer to a NUL-terminated string (or NULL for no value).
    let text = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return false;
        }
        CStr::from_ptr(*newval).to_string_lossy().into_owned()
    };
    match parse(&text) {
        Ok(_) => true,
        Err(detail) => {
            let detail = CString::new(detail).unwrap_or_default();
            // SAFETY: GUC reports this palloc'd string with its "invalid value" error.
            unsafe { pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr()) };
            false
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_cleanup_prefixes(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_list(newval, crate::ids::parse_cleanup_prefixes)
}

#[pg_guard]
unsafe extern "C-unwind" fn check_partner_roles(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_list(newval, crate::ids::parse_role_list)
}

/// The cleanup prefix templates (validated by their check hook).
pub fn cleanup_prefix_templates() -> Vec<String> {
    crate::ids::parse_cleanup_prefixes(&text(&CLEANUP_PREFIXES)).unwrap_or_default()
}

/// The `users.role` values that count as partners (validated by their check hook).
pub fn partner_roles() -> Vec<String> {
    crate::ids::parse_role_list(&text(&PARTNER_ROLES)).unwrap_or_default()
}

/// The application user credited with this transaction's changes (`legacy_backup.actor`),
/// None when unset or empty.
pub fn actor() -> Option<String> {
    ACTOR
        .get()
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| !a.is_empty())
}

/// How far back undo reaches (`legacy_backup.undo_window`).
pub fn undo_window() -> std::time::Duration {
    duration(&UNDO_WINDOW)
}

/// How old the newest snapshot may be for an export (`legacy_backup.max_snapshot_age`).
pub fn max_snapshot_age() -> std::time::Duration {
    duration(&MAX_SNAPSHOT_AGE)
}

/// How long uploaded snapshot bodies stay in the database (`legacy_backup.snapshot_retention`).
pub fn snapshot_retention() -> std::time::Duration {
    duration(&SNAPSHOT_RETENTION)
}

/// How often the worker wakes on its own (`legacy_backup.naptime`).
pub fn naptime() -> std::time::Duration {
    duration(&NAPTIME)
}

/// Total time for one object-storage request (`legacy_backup.http_timeout`).
pub fn http_timeout() -> std::time::Duration {
    duration(&HTTP_TIMEOUT)
}

/// The bound on each statement of the worker (`legacy_backup.job_timeout`).
pub fn job_timeout() -> std::time::Duration {
    duration(&JOB_TIMEOUT)
}

/// How long a snapshot may wait for its upload before health says so (`legacy_backup.max_upload_lag`).
pub fn max_upload_lag() -> std::time::Duration {
    duration(&MAX_UPLOAD_LAG)
}

/// How often each backup object is re-read (`legacy_backup.scrub_interval`).
pub fn scrub_interval() -> std::time::Duration {
    duration(&SCRUB_INTERVAL)
}

/// How long a manual cleanup waits for the worker (`legacy_backup.cleanup_wait`).
pub fn cleanup_wait() -> std::time::Duration {
    duration(&CLEANUP_WAIT)
}

/// A duration setting's value, parsed by the same `interval_in` its check hook accepted it with.
/// Rust reads durations only through the accessors above; SQL (the export gate's
/// `cleanup_delay`) through `current_setting(…)::interval`, the same parser.
fn duration(setting: &GucSetting<Option<CString>>) -> std::time::Duration {
    let us = setting
        .get()
        .and_then(|text| parse_interval(&text))
        .map(|iv| interval_micros(&iv).clamp(0, i64::MAX as i128) as u64)
        .unwrap_or(0);
    std::time::Duration::from_micros(us)
}

/// A string setting's value, empty when unset.
pub fn text(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn register() {
    GucRegistry::define_string_guc(
        c"legacy_backup.actor",
        c"Application user id credited with changes made in this transaction.",
        c"Set with SET LOCAL by the application; snapshots and the audit trail record it.",
        &ACTOR,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"legacy_backup.change_source",
        c"Source recorded in the audit trail for changes in this transaction.",
        c"Set internally by undo and restore; superuser only.",
        &CHANGE_SOURCE,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the hook is a valid check hook for a string GUC.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"legacy_backup.undo_window",
            c"How far back legacy_undo_last_categorization may undo (an interval).",
            c"PostgreSQL interval notation, from 1 second to 366 days. Default 24 hours.",
            &UNDO_WINDOW,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_undo_window),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"legacy_backup.max_snapshot_age",
            c"How old the newest snapshot may be for a session to be exported (an interval).",
            c"PostgreSQL interval notation, from 1 second to 30 days. Default 1 hour.",
            &MAX_SNAPSHOT_AGE,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_max_snapshot_age),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"legacy_backup.cleanup_delay",
            c"How long after export the cleanup of a session's files is scheduled (an interval).",
            c"PostgreSQL interval notation, from 0 seconds to 3660 days. Default 7 days.",
            &CLEANUP_DELAY,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_cleanup_delay),
            None,
            None,
        );
    }
    // SAFETY: each hook is a valid check hook for a string GUC.
    unsafe {
        for (name, short, setting, hook) in [
            (c"legacy_backup.naptime", c"How often the worker wakes without being woken (an interval, 1s to 1h; default 10s).", &NAPTIME, check_naptime as unsafe extern "C-unwind" fn(_, _, _) -> bool),
            (c"legacy_backup.snapshot_retention", c"How long bodies of uploaded snapshots stay in the database (an interval; default 30 days). The newest per session is always kept.", &SNAPSHOT_RETENTION, check_retention),
            (c"legacy_backup.http_timeout", c"Total time allowed for one object-storage request (an interval; default 60s).", &HTTP_TIMEOUT, check_http_timeout),
            (c"legacy_backup.job_timeout", c"Longest time one statement of the worker may run or wait for a lock, application code it fires included (an interval, 1s to 1h; default 30s).", &JOB_TIMEOUT, check_job_timeout),
            (c"legacy_backup.max_upload_lag", c"Health is not ok while a snapshot has waited longer than this for its upload (an interval; default 15min).", &MAX_UPLOAD_LAG, check_max_upload_lag),
            (c"legacy_backup.scrub_interval", c"The worker re-reads every backup object once per this interval, checking presence, seal and sha256 (an interval, 1s to 366 days; default 7 days).", &SCRUB_INTERVAL, check_scrub_interval),
        ] {
            GucRegistry::define_string_guc_with_hooks(name, short, c"", setting, GucContext::Sighup, GucFlags::default(), Some(hook), None, None);
        }
        GucRegistry::define_string_guc_with_hooks(
            c"legacy_backup.cleanup_prefixes",
            c"Key prefixes a session's cleanup deletes, comma-separated, each ending in {sessionId}/.",
            c"Default: pst/{sessionId}/, documents/{sessionId}/, legacy-import/{sessionId}/. Never under backups/.",
            &CLEANUP_PREFIXES,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_cleanup_prefixes),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"legacy_backup.partner_roles",
            c"users.role values admitted to the partner-only actions (comma-separated).",
            c"Default: Partner, BusinessOwner (the application's own partner check).",
            &PARTNER_ROLES,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_partner_roles),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"legacy_backup.cleanup_wait",
            c"How long legacy_cleanup_session waits for the cleanup before returning the job id (an interval; default 60s).",
            c"",
            &CLEANUP_WAIT,
            GucContext::Userset,
            GucFlags::default(),
            Some(check_cleanup_wait),
            None,
            None,
        );
    }
    GucRegistry::define_string_guc(
        c"legacy_backup.database",
        c"Database the background worker connects to (default postgres).",
        c"",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"legacy_backup.max_attempts",
        c"Attempts per background job before it is marked failed (default 10).",
        c"",
        &MAX_ATTEMPTS,
        1,
        100,
        GucContext::Sighup,
        GucFlags::default(),
    );
    for (name, short, setting) in [
        (
            c"legacy_backup.r2_endpoint",
            c"Object-storage endpoint, e.g. https://<account>.r2.cloudflarestorage.com.",
            &R2_ENDPOINT,
        ),
        (
            c"legacy_backup.r2_account_id",
            c"Cloudflare account id; the R2 endpoint is derived from it when r2_endpoint is empty.",
            &R2_ACCOUNT_ID,
        ),
        (
            c"legacy_backup.r2_bucket",
            c"Bucket name (default legacy-import).",
            &R2_BUCKET,
        ),
        (
            c"legacy_backup.r2_backup_bucket",
            c"Bucket for backups/ (snapshots, audit trail); default: legacy_backup.r2_bucket.",
            &R2_BACKUP_BUCKET,
        ),
        (
            c"legacy_backup.r2_region",
            c"Signing region (default auto).",
            &R2_REGION,
        ),
        (
            c"legacy_backup.r2_access_key_id",
            c"Access key id for object storage.",
            &R2_ACCESS_KEY_ID,
        ),
        (
            c"legacy_backup.r2_credentials_file",
            c"File with R2_* credentials (mode 0600), used for what the settings leave empty.",
            &R2_CREDENTIALS_FILE,
        ),
    ] {
        GucRegistry::define_string_guc(
            name,
            short,
            c"",
            setting,
            GucContext::Sighup,
            GucFlags::default(),
        );
    }
    GucRegistry::define_bool_guc(
        c"legacy_backup.allow_drop",
        c"Confirms a statement the guards refuse: dropping snapshots and the audit trail, or disabling, renaming or replacing the extension's triggers (superuser only).",
        c"Meant for SET in the session that runs it, after pg_dump of the extension's tables.",
        &ALLOW_DROP,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"legacy_backup.skip_snapshot_check",
        c"Export without a fresh snapshot (superusers and legacy_backup_admin members only; audited).",
        c"Meant for SET LOCAL in the exporting transaction.",
        &SKIP_SNAPSHOT_CHECK,
        GucContext::Userset,
        GucFlags::default(),
    );
    // Unknown legacy_backup.* names are refused, and placeholders left in postgresql.conf are
    // removed with a WARNING that names the setting but never its value. The secret access key
    // is deliberately not a setting (settings are readable by pg_read_all_settings members and
    // land in logs through ALTER SYSTEM): it comes from the credentials file or the environment.
    // SAFETY: called once from _PG_init with a static NUL-terminated name.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"legacy_backup".as_ptr()) };
}

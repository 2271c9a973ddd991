//! Where the worker's object-storage settings come from. Per field, the first that is set wins:
//! 1. the `legacy_backup.r2_*` settings (postgresql.conf, or ALTER SYSTEM), for everything but
//!    the secret access key, which is never a setting (see guc.rs);
//! 2. the credentials file named by `legacy_backup.r2_credentials_file` (mode 0600 or stricter,
//!    `KEY=value` lines with the environment variables' names);
//! 3. the environment of the postmaster: R2_ENDPOINT, R2_ACCOUNT_ID, R2_ACCESS_KEY_ID,
//!    R2_SECRET_ACCESS_KEY, R2_BUCKET_NAME;
//! 4. defaults: bucket `legacy-import`, region `auto`, endpoint derived from the account id;
//!    the backup bucket (`legacy_backup.r2_backup_bucket`, R2_BACKUP_BUCKET_NAME) defaults to
//!    the bucket.
//!
//! The sealing keys (`LEGACY_BACKUP_KEY`, `LEGACY_BACKUP_KEY_PREVIOUS`) come from the credentials
//! file or the environment only: a key is never a setting.
//!
//! The pure part (merging and validating) is tested with `cargo test`.

use crate::storage::seal::KeyRing;
use crate::storage::{Client, Config};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub gucs: HashMap<&'static str, String>,
    pub file: HashMap<String, String>,
    pub env: HashMap<String, String>,
}

/// The sealing keys' variables: in the credentials file or the environment, never settings.
const KEY_VARS: [&str; 2] = ["LEGACY_BACKUP_KEY", "LEGACY_BACKUP_KEY_PREVIOUS"];

/// (setting name, variable name in the file and environment)
const FIELDS: &[(&str, &str)] = &[
    ("endpoint", "R2_ENDPOINT"),
    ("account_id", "R2_ACCOUNT_ID"),
    ("bucket", "R2_BUCKET_NAME"),
    ("backup_bucket", "R2_BACKUP_BUCKET_NAME"),
    ("region", "R2_REGION"),
    ("access_key_id", "R2_ACCESS_KEY_ID"),
    ("secret_access_key", "R2_SECRET_ACCESS_KEY"),
];

impl Sources {
    fn pick(&self, field: &str) -> Option<String> {
        let var = FIELDS
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| *v)
            .expect("known field");
        [self.gucs.get(field), self.file.get(var), self.env.get(var)]
            .into_iter()
            .flatten()
            .map(|v| v.trim().to_string())
            .find(|v| !v.is_empty())
    }

    /// The sealing keys: the credentials file's, else the environment's (both variables from
    /// the same place, so a rotation is one edit). The error never holds a key.
    pub fn key_ring(&self) -> Result<KeyRing, String> {
        let from = |source: &HashMap<String, String>| -> Option<[Option<String>; 2]> {
            let pair = KEY_VARS.map(|v| source.get(v).filter(|t| !t.trim().is_empty()).cloned());
            pair.iter().any(Option::is_some).then_some(pair)
        };
        let [current, previous] = from(&self.file)
            .or_else(|| from(&self.env))
            .unwrap_or_default();
        KeyRing::from_texts(current.as_deref(), previous.as_deref())
    }

    /// The bucket that holds `backups/`.
    pub fn backup_bucket(&self, bucket: &str) -> String {
        self.pick("backup_bucket")
            .unwrap_or_else(|| bucket.to_string())
    }

    /// The storage configuration, or what is missing (never the secret itself).
    pub fn resolve(&self, request_timeout: Duration, max_attempts: u32) -> Result<Config, String> {
        let endpoint = match (self.pick("endpoint"), self.pick("account_id")) {
            (Some(e), _) => e,
            (None, Some(account)) => format!("https://{account}.r2.cloudflarestorage.com"),
            (None, None) => {
                return Err("object storage is not configured: set legacy_backup.r2_endpoint or legacy_backup.r2_account_id (or R2_ENDPOINT / R2_ACCOUNT_ID)".into())
            }
        };
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(format!(
                "legacy_backup.r2_endpoint must start with https:// or http://, not {endpoint:?}"
            ));
        }
        let access_key_id = self.pick("access_key_id").ok_or("object storage credentials missing: set legacy_backup.r2_access_key_id (or R2_ACCESS_KEY_ID)")?;
        let secret_access_key = self
            .pick("secret_access_key")
            .ok_or("object storage credentials missing: put R2_SECRET_ACCESS_KEY in the file named by legacy_backup.r2_credentials_file (or the server's environment)")?;
        Ok(Config {
            endpoint,
            bucket: self
                .pick("bucket")
                .unwrap_or_else(|| "legacy-import".into()),
            region: self.pick("region").unwrap_or_else(|| "auto".into()),
            access_key_id,
            secret_access_key,
            connect_timeout: Duration::from_secs(5),
            request_timeout,
            max_attempts,
            backoff: Duration::from_millis(250),
        })
    }
}

/// Object storage as the settings, credentials file and environment describe it: the source
/// bucket (what a cleanup deletes from), the backup bucket (snapshots; never cleaned) and the keys
/// that seal and open backups.
pub struct Storage {
    pub source: Client,
    pub backups: Client,
    /// Err: a key is set but unusable (uploads stop until it is fixed; never a plain fallback).
    pub keys: Result<KeyRing, String>,
}

/// Reads the settings, the credentials file and the environment.
fn sources() -> Result<Sources, String> {
    use crate::guc;
    let mut sources = Sources {
        gucs: [
            ("endpoint", guc::text(&guc::R2_ENDPOINT)),
            ("account_id", guc::text(&guc::R2_ACCOUNT_ID)),
            ("bucket", guc::text(&guc::R2_BUCKET)),
            ("region", guc::text(&guc::R2_REGION)),
            ("access_key_id", guc::text(&guc::R2_ACCESS_KEY_ID)),
            ("backup_bucket", guc::text(&guc::R2_BACKUP_BUCKET)),
        ]
        .into_iter()
        .collect(),
        file: Default::default(),
        env: environment(),
    };
    let file = guc::text(&guc::R2_CREDENTIALS_FILE);
    if !file.is_empty() {
        sources.file = read_credentials_file(&file)?;
    }
    Ok(sources)
}

/// The storage clients and keys, for the worker and the SQL functions that reach object storage.
pub fn storage_from_settings() -> Result<Storage, String> {
    let sources = sources()?;
    let config = sources.resolve(crate::guc::http_timeout(), 3)?;
    let backup_bucket = sources.backup_bucket(&config.bucket);
    let source = super::with_signals_blocked(|| Client::new(config)).map_err(|e| e.to_string())?;
    Ok(Storage {
        backups: source.for_bucket(&backup_bucket),
        source,
        keys: sources.key_ring(),
    })
}

/// The sealing keys alone (health reports them without reaching object storage).
pub fn key_ring_from_settings() -> Result<KeyRing, String> {
    sources()?.key_ring()
}

/// Object storage for SQL functions (verify, fetch, manual cleanup), with a SQL error when it is
/// not configured.
pub fn sql_storage() -> crate::error::LbResult<Storage> {
    storage_from_settings().map_err(|e| {
        crate::error::LbError::new(
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            e,
        )
        .hint("Configure object storage: see docs/operations.md, Background worker and object storage.")
    })
}

/// Reads a credentials file: refused unless only its owner may read it.
pub fn read_credentials_file(path: &str) -> Result<HashMap<String, String>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read credentials file {path}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "credentials file {path} has mode {mode:o}; it must be 0600 or stricter"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read credentials file {path}: {e}"))?;
    Ok(parse_credentials(&text))
}

pub fn parse_credentials(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().trim_start_matches("export ").trim().to_string(),
                v.trim().trim_matches('"').to_string(),
            )
        })
        .collect()
}

pub fn environment() -> HashMap<String, String> {
    FIELDS
        .iter()
        .map(|(_, var)| *var)
        .chain(KEY_VARS)
        .filter_map(|var| std::env::var(var).ok().map(|v| (var.to_string(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Sources {
        Sources::default()
    }

    #[test]
    fn settings_win_over_file_over_environment() {
        let mut s = sources();
        s.env.insert("R2_ACCOUNT_ID".into(), "envacct".into());
        s.env.insert("R2_ACCESS_KEY_ID".into(), "env-key".into());
        s.env
            .insert("R2_SECRET_ACCESS_KEY".into(), "env-secret".into());
        s.env.insert("R2_BUCKET_NAME".into(), "env-bucket".into());
        s.file.insert("R2_ACCESS_KEY_ID".into(), "file-key".into());
        s.gucs.insert("access_key_id", "guc-key".into());
        s.gucs.insert("bucket", "".into()); // empty settings do not count
        let c = s.resolve(Duration::from_secs(60), 5).unwrap();
        assert_eq!(c.endpoint, "https://envacct.r2.cloudflarestorage.com");
        assert_eq!(c.access_key_id, "guc-key");
        assert_eq!(c.secret_access_key, "env-secret");
        assert_eq!(c.bucket, "env-bucket");
        assert_eq!(c.region, "auto");
    }

    #[test]
    fn missing_settings_are_named_without_secrets() {
        let err = sources().resolve(Duration::from_secs(1), 1).unwrap_err();
        assert!(err.contains("r2_endpoint"));
        let mut s = sources();
        s.gucs.insert("endpoint", "http://127.0.0.1:9000".into());
        s.gucs.insert("access_key_id", "k".into());
        let err = s.resolve(Duration::from_secs(1), 1).unwrap_err();
        assert!(err.contains("R2_SECRET_ACCESS_KEY"));
        s.gucs.insert("endpoint", "ftp://x".into());
        assert!(s
            .resolve(Duration::from_secs(1), 1)
            .unwrap_err()
            .contains("https://"));
    }

    #[test]
    fn keys_come_from_the_file_else_the_environment_and_the_backup_bucket_defaults() {
        let k = |n: u8| hex::encode([n; 32]);
        let mut s = sources();
        assert!(s.key_ring().unwrap().current().is_none());
        s.env.insert("LEGACY_BACKUP_KEY".into(), k(1));
        let env_id = s.key_ring().unwrap().current().unwrap().id().to_string();
        s.file.insert("LEGACY_BACKUP_KEY".into(), k(2));
        s.file.insert("LEGACY_BACKUP_KEY_PREVIOUS".into(), k(1));
        let ring = s.key_ring().unwrap();
        assert_ne!(ring.current().unwrap().id(), env_id);
        assert_eq!(ring.ids()[1], env_id);
        s.file.insert("LEGACY_BACKUP_KEY".into(), "short".into());
        let err = s.key_ring().unwrap_err();
        assert!(
            err.contains("LEGACY_BACKUP_KEY") && !err.contains("short"),
            "{err}"
        );
        assert_eq!(s.backup_bucket("legacy-import"), "legacy-import");
        s.env
            .insert("R2_BACKUP_BUCKET_NAME".into(), "env-backups".into());
        s.gucs.insert("backup_bucket", "firm-backups".into());
        assert_eq!(s.backup_bucket("legacy-import"), "firm-backups");
    }

    #[test]
    fn credentials_files_parse_and_must_be_private() {
        let parsed = parse_credentials(
            "# comment\nexport R2_ACCESS_KEY_ID=abc\nR2_SECRET_ACCESS_KEY = \"s=ecret\"\n\n",
        );
        assert_eq!(parsed["R2_ACCESS_KEY_ID"], "abc");
        assert_eq!(parsed["R2_SECRET_ACCESS_KEY"], "s=ecret");
        let dir = std::env::temp_dir().join(format!("lb-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r2.env");
        std::fs::write(&path, "R2_ACCESS_KEY_ID=abc\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_credentials_file(path.to_str().unwrap()).unwrap_err();
        assert!(err.contains("0600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_credentials_file(path.to_str().unwrap()).unwrap()["R2_ACCESS_KEY_ID"],
            "abc"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

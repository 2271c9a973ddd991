//! Validation of ids that become part of object keys, and the snapshot key naming rule.
//! Pure Rust: tested with plain `cargo test`.

use crate::error::{LbError, LbResult};
use chrono::{DateTime, Utc};

/// Longest id accepted. Application ids are 36-character UUIDs; the limit leaves room for other
/// id schemes while keeping object keys far below S3's 1024-byte limit.
pub const MAX_ID_LEN: usize = 128;

/// Checks an id that will be embedded in an object key such as `backups/{id}/...`.
///
/// Only RFC 3986 unreserved characters are allowed (`A-Z a-z 0-9 - . _ ~`), and `..` nowhere,
/// so a key built from the id can never leave its prefix and needs no percent-encoding.
pub fn validate_id(param: &str, value: Option<&str>) -> LbResult<String> {
    let value = value.ok_or_else(|| LbError::null_value(param))?;
    if value.is_empty() {
        return Err(LbError::invalid_parameter(format!(
            "{param} must not be empty"
        )));
    }
    let unsafe_key = |why: &str| {
        LbError::invalid_parameter(format!("{param} is not a safe identifier"))
            .detail(format!("It {why}."))
            .hint("Ids become part of object-storage keys, so they may contain only A-Z, a-z, 0-9, '-', '_', '.' and '~', with no '..', up to 128 characters.")
    };
    if value.len() > MAX_ID_LEN {
        return Err(unsafe_key(&format!(
            "is {} bytes long, over the limit of {MAX_ID_LEN}",
            value.len()
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~".contains(*c)))
    {
        let code = bad as u32;
        let shown = if bad.is_control() {
            format!("control character U+{code:04X}")
        } else {
            format!("character \"{bad}\" (U+{code:04X})")
        };
        return Err(unsafe_key(&format!("contains the {shown}")));
    }
    if value.contains("..") {
        return Err(unsafe_key("contains \"..\""));
    }
    // "." alone is a path segment of its own: `backups/./…` is not the session's prefix.
    if !value.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err(unsafe_key("has no letter or digit"));
    }
    Ok(value.to_string())
}

/// The R2 key of a snapshot: `backups/{sessionId}/categorization-{timestamp}.json`, where the
/// timestamp is JavaScript's `toISOString()` (UTC, milliseconds, `Z`) with ':' and '.' replaced
/// by '-'. These are the names the application's own backups already use.
pub fn snapshot_key(session_id: &str, at: DateTime<Utc>) -> String {
    format!(
        "backups/{session_id}/categorization-{}.json",
        at.format("%Y-%m-%dT%H-%M-%S-%3fZ")
    )
}

/// Where segment `sequence` of a session's audit trail, shipped by database `instance`, lives:
/// `backups/{id}/trail-{instance}-{sequence, 10 digits}.json`. Each database (a fresh install, a
/// restore from a dump) writes a chain of its own, so it never reaches for another's keys; the
/// digits make key order sequence order.
pub fn trail_segment_key(session_id: &str, instance: &str, sequence: i32) -> String {
    format!("backups/{session_id}/trail-{instance}-{sequence:010}.json")
}

/// The instance and sequence of a trail segment's key, if it is one (`trail_segment_key` read back).
pub fn trail_segment_sequence(key: &str) -> Option<(String, i32)> {
    let rest = key.strip_prefix("backups/")?;
    let (session, file) = rest.split_once('/')?;
    validate_id("session id in key", Some(session)).ok()?;
    let (instance, digits) = file
        .strip_prefix("trail-")?
        .strip_suffix(".json")?
        .split_once('-')?;
    if instance.len() != 8
        || !instance
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sequence: i32 = digits.parse().ok().filter(|n| *n >= 1)?;
    Some((instance.to_string(), sequence))
}

/// The placeholder of a cleanup prefix template.
pub const SESSION_PLACEHOLDER: &str = "{sessionId}";

/// Parses `legacy_backup.cleanup_prefixes`: a comma-separated list of key prefix templates, each
/// ending in `{sessionId}/` (so `documents/s1/` never reaches `documents/s1x/`), made of
/// unreserved characters and `/` otherwise, never under `backups/`, where the snapshots live.
pub fn parse_cleanup_prefixes(text: &str) -> Result<Vec<String>, String> {
    let mut templates = Vec::new();
    for raw in text.split(',') {
        let template = raw.trim();
        if template.is_empty() {
            continue;
        }
        let Some(head) = template.strip_suffix(&format!("{SESSION_PLACEHOLDER}/")) else {
            return Err(format!(
                "\"{template}\" must end with {SESSION_PLACEHOLDER}/"
            ));
        };
        if !(head.is_empty() || head.ends_with('/')) || head.starts_with('/') {
            return Err(format!(
                "\"{template}\" must be a path of whole segments before {SESSION_PLACEHOLDER}/, e.g. documents/{SESSION_PLACEHOLDER}/"
            ));
        }
        if let Some(bad) = head
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-._~/".contains(*c)))
        {
            return Err(format!("\"{template}\" contains \"{bad}\""));
        }
        if head.contains("..") || head.contains("//") {
            return Err(format!(
                "\"{template}\" contains \"..\" or an empty segment"
            ));
        }
        if head.starts_with("backups/") || head.is_empty() {
            return Err(format!(
                "\"{template}\" would reach the snapshots under backups/"
            ));
        }
        templates.push(template.to_string());
    }
    if templates.is_empty() {
        return Err("at least one prefix is needed".into());
    }
    Ok(templates)
}

/// Parses `legacy_backup.partner_roles`: a comma-separated list of `users.role` values.
pub fn parse_role_list(text: &str) -> Result<Vec<String>, String> {
    let roles: Vec<String> = text
        .split(',')
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    if roles.is_empty() {
        return Err("at least one role is needed".into());
    }
    if let Some(bad) = roles
        .iter()
        .find(|r| !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(format!(
            "\"{bad}\" is not a role name (letters, digits and _ only)"
        ));
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trail_segment_keys_round_trip() {
        let key = trail_segment_key("s1", "0a1b2c3d", 42);
        assert_eq!(key, "backups/s1/trail-0a1b2c3d-0000000042.json");
        assert_eq!(trail_segment_sequence(&key), Some(("0a1b2c3d".into(), 42)));
        for bad in [
            "backups/s1/trail-0a1b2c3d-42.json",
            "backups/s1/trail-0000000042.json",
            "backups/s1/trail-0A1B2C3D-0000000042.json",
            "backups/../trail-0a1b2c3d-0000000042.json",
            "backups/s1/trail-0a1b2c3d-0000000000.json",
            "backups/s1/categorization-2025.json",
            "pst/s1/trail-0000000042.json",
        ] {
            assert_eq!(trail_segment_sequence(bad), None, "{bad}");
        }
    }
    use chrono::TimeZone;

    #[test]
    fn accepts_uuids_and_plain_ids() {
        assert_eq!(
            validate_id("session_id", Some("8f2c9a4e-1b7d-4c3e-9f00-0123456789ab")).unwrap(),
            "8f2c9a4e-1b7d-4c3e-9f00-0123456789ab"
        );
        assert!(validate_id("id", Some("cuid_abc.DEF~1")).is_ok());
    }

    #[test]
    fn rejects_null_empty_and_hostile_ids() {
        assert_eq!(
            validate_id("session_id", None).unwrap_err().code,
            pgrx::PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED
        );
        for bad in [
            "",
            "../x",
            "a/b",
            "..",
            "a..b",
            "x\u{0}y",
            "tab\tid",
            "a b",
            "%2F",
            "a\\b",
            "é",
            "x'; drop table y; --",
            ".",
            "-",
            "._~",
        ] {
            let err = validate_id("session_id", Some(bad)).unwrap_err();
            assert!(
                matches!(
                    err.code,
                    pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
                ),
                "{bad:?} accepted"
            );
        }
        assert!(validate_id("id", Some(&"a".repeat(MAX_ID_LEN))).is_ok());
        assert!(validate_id("id", Some(&"a".repeat(MAX_ID_LEN + 1))).is_err());
    }

    #[test]
    fn control_characters_are_named_in_the_detail() {
        let err = validate_id("session_id", Some("a\u{7}b")).unwrap_err();
        assert!(err.detail.unwrap().contains("U+0007"));
    }

    #[test]
    fn cleanup_prefix_templates_stay_under_the_session() {
        let ok = parse_cleanup_prefixes(
            "pst/{sessionId}/, documents/{sessionId}/,legacy-import/{sessionId}/",
        )
        .unwrap();
        assert_eq!(ok.len(), 3);
        for bad in [
            "documents/{sessionId}",
            "documents/{sessionId}x/",
            "documents{sessionId}/",
            "{sessionId}/",
            "backups/{sessionId}/",
            "../{sessionId}/",
            "a//{sessionId}/",
            "/abs/{sessionId}/",
            "doc uments/{sessionId}/",
            "",
            " , ",
        ] {
            assert!(parse_cleanup_prefixes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn role_lists_are_names() {
        assert_eq!(
            parse_role_list("Partner, BusinessOwner").unwrap(),
            vec!["Partner", "BusinessOwner"]
        );
        assert!(parse_role_list(" , ").is_err());
        assert!(parse_role_list("Partner; DROP").is_err());
    }

    #[test]
    fn snapshot_key_matches_the_applications_naming() {
        let at = Utc.with_ymd_and_hms(2025, 12, 9, 10, 20, 30).unwrap()
            + chrono::Duration::microseconds(123_456);
        assert_eq!(
            snapshot_key("s1", at),
            "backups/s1/categorization-2025-12-09T10-20-30-123Z.json"
        );
        let whole = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            snapshot_key("s1", whole),
            "backups/s1/categorization-2026-01-02T03-04-05-000Z.json"
        );
    }
}

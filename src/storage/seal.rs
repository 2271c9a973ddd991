//! Sealed objects: what the extension writes to object storage is encrypted and authenticated
//! with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) under a 256-bit key, so a holder of
//! the bucket's credentials can neither read a backup nor forge, move or replay one unnoticed.
//!
//! Envelope, version 1:
//!
//! ```text
//! "LBSEAL" | version (1 byte) | header length (2 bytes, big-endian) | header (JSON)
//!          | nonce (24 random bytes) | ciphertext + Poly1305 tag (16 bytes)
//! ```
//!
//! The header names the key id, the object key, the object's id (a snapshot's id, a trail
//! segment's id), the session id and the sha256 of the plaintext. Everything before the
//! ciphertext is the associated data, so none of it can change without the tag failing; and the
//! reader checks the header against where it found the object and what the database records, so
//! an object copied to another key or session does not open. The header is readable without the
//! key (ids and a digest; never content): storage alone can tell what each object claims to be.
//!
//! Keys are 32 bytes, given as 64 hex digits or base64. A key's id is a truncated SHA-256 of the
//! key under a fixed label: it names the key without revealing it. Nothing here formats a key
//! into a message.

use chacha20poly1305::aead::{Aead, AeadCore, AeadInPlace, KeyInit, OsRng, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use zeroize::Zeroizing;

pub const MAGIC: &[u8; 6] = b"LBSEAL";
pub const ENVELOPE_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// A header is a few ids and a digest; anything longer is not ours.
const MAX_HEADER_LEN: usize = 4096;

/// What a sealed object says it is. Authenticated with the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    pub object_key: String,
    pub object_id: String,
    pub session_id: String,
    /// Hex sha256 of the plaintext.
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Header {
    key_id: String,
    #[serde(flatten)]
    context: Context,
}

/// A 256-bit key; its bytes are wiped on drop and never printed.
#[derive(Clone)]
pub struct Key {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Key {
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        let bytes = Zeroizing::new(bytes);
        let mut h = Sha256::new();
        h.update(b"legacy_backup key id v1\0");
        h.update(bytes.as_slice());
        let id = hex::encode(&h.finalize()[..8]);
        Key { id, bytes }
    }

    /// 64 hex digits or base64 (standard or URL-safe, padded or not) of 32 bytes. The error never
    /// holds the text.
    pub fn parse(text: &str) -> Result<Key, String> {
        use base64::Engine;
        let text = Zeroizing::new(text.trim().to_string());
        let decoded = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(text.as_bytes()).ok()
        } else {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines.iter().find_map(|e| e.decode(text.as_bytes()).ok())
        };
        let decoded = Zeroizing::new(decoded.ok_or(
            "is neither 64 hex digits nor base64 (generate one with: openssl rand -hex 32)",
        )?);
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            format!(
                "must be 32 bytes (256 bits), not {} (generate one with: openssl rand -hex 32)",
                decoded.len()
            )
        })?;
        Ok(Key::from_bytes(bytes))
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The current key (for new writes) and older keys that still open old objects.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    current: Option<Key>,
    previous: Vec<Key>,
}

impl KeyRing {
    /// From `LEGACY_BACKUP_KEY` and `LEGACY_BACKUP_KEY_PREVIOUS` (one or more keys separated by
    /// commas or white space). A previous key without a current one is refused: it would leave
    /// new objects plain while old ones are sealed, which is a misconfiguration, not a choice.
    pub fn from_texts(current: Option<&str>, previous: Option<&str>) -> Result<KeyRing, String> {
        let current = current
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Key::parse(t).map_err(|e| format!("LEGACY_BACKUP_KEY {e}")))
            .transpose()?;
        let mut ring = KeyRing {
            current,
            previous: Vec::new(),
        };
        for (i, text) in previous
            .unwrap_or_default()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .enumerate()
        {
            let key = Key::parse(text)
                .map_err(|e| format!("LEGACY_BACKUP_KEY_PREVIOUS (key {}) {e}", i + 1))?;
            ring.previous.push(key);
        }
        if ring.current.is_none() && !ring.previous.is_empty() {
            return Err(
                "LEGACY_BACKUP_KEY_PREVIOUS is set but LEGACY_BACKUP_KEY is not: set the current key"
                    .into(),
            );
        }
        Ok(ring)
    }

    pub fn with_current(key: Key) -> KeyRing {
        KeyRing {
            current: Some(key),
            previous: Vec::new(),
        }
    }

    pub fn current(&self) -> Option<&Key> {
        self.current.as_ref()
    }

    pub fn ids(&self) -> Vec<&str> {
        self.current
            .iter()
            .chain(&self.previous)
            .map(Key::id)
            .collect()
    }

    fn find(&self, id: &str) -> Option<&Key> {
        self.current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == id)
    }
}

/// Why an object did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// Not an envelope at all (no magic): a plain object.
    NotSealed,
    /// Starts like an envelope but cannot be read (cut short, bad header).
    Malformed(String),
    UnsupportedVersion(u8),
    /// Sealed with a key this server does not hold.
    UnknownKey(String),
    /// The header names another place than the one the object was found at or recorded for.
    Misplaced {
        field: &'static str,
        found: String,
        expected: String,
    },
    /// The tag does not verify: changed, forged, or opened with the wrong key.
    Forged,
    /// Decrypted, but the plaintext's sha256 is not the one in the header.
    DigestMismatch,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::NotSealed => f.write_str("the object is not sealed"),
            SealError::Malformed(why) => write!(f, "the sealed object is malformed: {why}"),
            SealError::UnsupportedVersion(v) => {
                write!(f, "the envelope version {v} is not supported (expected {ENVELOPE_VERSION})")
            }
            SealError::UnknownKey(id) => write!(
                f,
                "the object is sealed with key {id}, which this server does not hold (LEGACY_BACKUP_KEY, LEGACY_BACKUP_KEY_PREVIOUS)"
            ),
            SealError::Misplaced {
                field,
                found,
                expected,
            } => write!(
                f,
                "the object was sealed for {field} {found:?}, not {expected:?} (moved or replayed)"
            ),
            SealError::Forged => f.write_str(
                "the seal does not verify: the object was changed or forged",
            ),
            SealError::DigestMismatch => {
                f.write_str("the opened content does not match the sha256 it was sealed with")
            }
        }
    }
}

impl std::error::Error for SealError {}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Seals `plaintext` for `context` (whose sha256 must be the plaintext's) with `key`.
pub fn seal(key: &Key, context: &Context, plaintext: &[u8]) -> Vec<u8> {
    seal_owned(key, context, plaintext.to_vec())
}

/// `seal`, in the plaintext's own buffer: the envelope's head is moved in front of it and the
/// body encrypted where it lies, so sealing a large snapshot allocates no second body-sized
/// buffer (fresh pages cost more than the cipher at 50 MB).
pub fn seal_owned(key: &Key, context: &Context, plaintext: Vec<u8>) -> Vec<u8> {
    debug_assert_eq!(context.sha256, sha256_hex(&plaintext));
    let header = serde_json::to_vec(&Header {
        key_id: key.id.clone(),
        context: context.clone(),
    })
    .expect("header serializes");
    assert!(header.len() <= MAX_HEADER_LEN, "ids are bounded");
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut head = Vec::with_capacity(9 + header.len() + NONCE_LEN);
    head.extend_from_slice(MAGIC);
    head.push(ENVELOPE_VERSION);
    head.extend_from_slice(&(header.len() as u16).to_be_bytes());
    head.extend_from_slice(&header);
    head.extend_from_slice(&nonce);
    let (head_len, body_len) = (head.len(), plaintext.len());
    let mut out = plaintext;
    out.reserve_exact(head_len + TAG_LEN);
    out.resize(head_len + body_len, 0);
    out.copy_within(0..body_len, head_len);
    out[..head_len].copy_from_slice(&head);
    let (aad, body) = out.split_at_mut(head_len);
    let cipher = XChaCha20Poly1305::new(key.bytes.as_slice().into());
    let tag = cipher
        .encrypt_in_place_detached(&nonce, aad, body)
        .expect("encryption of an in-memory buffer does not fail");
    out.extend_from_slice(&tag);
    out
}

/// What a sealed object claims, read without the key.
pub struct Envelope<'a> {
    pub key_id: String,
    pub context: Context,
    aad: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

/// Reads an envelope's header without opening it.
pub fn read_envelope(bytes: &[u8]) -> Result<Envelope<'_>, SealError> {
    if !is_sealed(bytes) {
        return Err(SealError::NotSealed);
    }
    let short = || SealError::Malformed("cut short".into());
    let version = *bytes.get(6).ok_or_else(short)?;
    if version != ENVELOPE_VERSION {
        return Err(SealError::UnsupportedVersion(version));
    }
    let len = u16::from_be_bytes(
        bytes
            .get(7..9)
            .ok_or_else(short)?
            .try_into()
            .expect("2 bytes"),
    ) as usize;
    if len > MAX_HEADER_LEN {
        return Err(SealError::Malformed(format!("header of {len} bytes")));
    }
    let header_end = 9 + len;
    let header_bytes = bytes.get(9..header_end).ok_or_else(short)?;
    let header: Header = serde_json::from_slice(header_bytes)
        .map_err(|e| SealError::Malformed(format!("header: {e}")))?;
    let nonce_end = header_end + NONCE_LEN;
    if bytes.len() < nonce_end + TAG_LEN {
        return Err(short());
    }
    Ok(Envelope {
        key_id: header.key_id,
        context: header.context,
        aad: &bytes[..nonce_end],
        nonce: &bytes[header_end..nonce_end],
        ciphertext: &bytes[nonce_end..],
    })
}

/// An opened object: its plaintext, what it was sealed for, and with which key.
#[derive(Debug)]
pub struct Opened {
    pub plaintext: Vec<u8>,
    pub context: Context,
    pub key_id: String,
}

/// Opens an object found at `object_key`. With `expected`, every field of the header must equal
/// it (what the database records); without, the object key must still match where it was found.
pub fn open(
    ring: &KeyRing,
    bytes: &[u8],
    object_key: &str,
    expected: Option<&Context>,
) -> Result<Opened, SealError> {
    let envelope = read_envelope(bytes)?;
    let found = &envelope.context;
    let fallback = Context {
        object_key: object_key.to_string(),
        ..found.clone()
    };
    let expected = expected.unwrap_or(&fallback);
    let checks: [(&'static str, &str, &str); 4] = [
        ("object key", &found.object_key, object_key),
        ("object key", &found.object_key, &expected.object_key),
        ("session", &found.session_id, &expected.session_id),
        ("object id", &found.object_id, &expected.object_id),
    ];
    for (field, found, expected) in checks {
        if found != expected {
            return Err(SealError::Misplaced {
                field,
                found: found.to_string(),
                expected: expected.to_string(),
            });
        }
    }
    if found.sha256 != expected.sha256 {
        return Err(SealError::DigestMismatch);
    }
    let key = ring
        .find(&envelope.key_id)
        .ok_or_else(|| SealError::UnknownKey(envelope.key_id.clone()))?;
    let cipher = XChaCha20Poly1305::new(key.bytes.as_slice().into());
    let plaintext = cipher
        .decrypt(
            envelope.nonce.into(),
            Payload {
                msg: envelope.ciphertext,
                aad: envelope.aad,
            },
        )
        .map_err(|_| SealError::Forged)?;
    if sha256_hex(&plaintext) != found.sha256 {
        return Err(SealError::DigestMismatch);
    }
    Ok(Opened {
        plaintext,
        context: envelope.context,
        key_id: envelope.key_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        Key::from_bytes([n; 32])
    }

    fn context(plaintext: &[u8]) -> Context {
        Context {
            object_key: "backups/s1/categorization-2025-12-09T10-20-30-123Z.json".into(),
            object_id: "snap-1".into(),
            session_id: "s1".into(),
            sha256: sha256_hex(plaintext),
        }
    }

    const BODY: &[u8] = br#"{"formatVersion":3,"sessionId":"s1","documents":[]}"#;

    #[test]
    fn round_trip_and_header_is_readable_without_the_key() {
        let ctx = context(BODY);
        let sealed = seal(&key(1), &ctx, BODY);
        assert!(is_sealed(&sealed));
        // The content is not in the object.
        assert!(!sealed.windows(11).any(|w| w == b"formatVersi"));
        let opened = open(
            &KeyRing::with_current(key(1)),
            &sealed,
            &ctx.object_key,
            Some(&ctx),
        )
        .unwrap();
        assert_eq!(opened.plaintext, BODY);
        assert_eq!(opened.key_id, key(1).id());
        assert_eq!(read_envelope(&sealed).unwrap().context, ctx);
        // Two seals of the same content differ (random nonce), and both open.
        let again = seal(&key(1), &ctx, BODY);
        assert_ne!(sealed, again);
        open(
            &KeyRing::with_current(key(1)),
            &again,
            &ctx.object_key,
            None,
        )
        .unwrap();
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let ctx = context(BODY);
        let sealed = seal(&key(1), &ctx, BODY);
        let ring = KeyRing::with_current(key(1));
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                assert!(
                    open(&ring, &bad, &ctx.object_key, Some(&ctx)).is_err(),
                    "byte {i} bit {bit:#x} flipped still opened"
                );
            }
        }
    }

    #[test]
    fn wrong_key_wrong_place_truncated_and_empty_are_refused() {
        let ctx = context(BODY);
        let sealed = seal(&key(1), &ctx, BODY);
        // A key of the same id cannot be made; a different key is unknown.
        assert!(matches!(
            open(
                &KeyRing::with_current(key(2)),
                &sealed,
                &ctx.object_key,
                None
            ),
            Err(SealError::UnknownKey(_))
        ));
        let ring = KeyRing::with_current(key(1));
        // Copied to another key, or recorded for another session or snapshot.
        assert!(matches!(
            open(
                &ring,
                &sealed,
                "backups/s2/categorization-2025-12-09T10-20-30-123Z.json",
                None
            ),
            Err(SealError::Misplaced {
                field: "object key",
                ..
            })
        ));
        for (field, other) in [
            (
                "session",
                Context {
                    session_id: "s2".into(),
                    ..ctx.clone()
                },
            ),
            (
                "object id",
                Context {
                    object_id: "snap-2".into(),
                    ..ctx.clone()
                },
            ),
        ] {
            match open(&ring, &sealed, &ctx.object_key, Some(&other)) {
                Err(SealError::Misplaced { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
        let other_sha = Context {
            sha256: sha256_hex(b"x"),
            ..ctx.clone()
        };
        assert_eq!(
            open(&ring, &sealed, &ctx.object_key, Some(&other_sha)).unwrap_err(),
            SealError::DigestMismatch
        );
        for n in [0, 5, 8, 9, 40, sealed.len() - 1] {
            assert!(
                open(&ring, &sealed[..n], &ctx.object_key, None).is_err(),
                "cut at {n}"
            );
        }
        assert_eq!(
            open(&ring, b"", &ctx.object_key, None).unwrap_err(),
            SealError::NotSealed
        );
        assert_eq!(
            open(&ring, BODY, &ctx.object_key, None).unwrap_err(),
            SealError::NotSealed
        );
        // A header rewritten to claim another place (and re-tagged by no one) fails the tag.
        let text = String::from_utf8_lossy(&sealed).replace("snap-1", "snap-9");
        let moved = read_envelope(text.as_bytes());
        if let Ok(e) = moved {
            assert_eq!(e.context.object_id, "snap-9");
            let claimed = Context {
                object_id: "snap-9".into(),
                ..ctx.clone()
            };
            assert_eq!(
                open(&ring, text.as_bytes(), &ctx.object_key, Some(&claimed)).unwrap_err(),
                SealError::Forged
            );
        }
    }

    #[test]
    fn rotation_opens_old_objects_and_seals_with_the_current_key() {
        let ctx = context(BODY);
        let old = seal(&key(1), &ctx, BODY);
        let rotated = KeyRing::from_texts(
            Some(&hex::encode([2u8; 32])),
            Some(&format!(
                "{} , {}",
                hex::encode([7u8; 32]),
                hex::encode([1u8; 32])
            )),
        )
        .unwrap();
        assert_eq!(rotated.current().unwrap().id(), key(2).id());
        assert_eq!(rotated.ids().len(), 3);
        assert_eq!(
            open(&rotated, &old, &ctx.object_key, None).unwrap().key_id,
            key(1).id()
        );
        let new = seal(rotated.current().unwrap(), &ctx, BODY);
        assert_eq!(read_envelope(&new).unwrap().key_id, key(2).id());
        // The old ring alone cannot open what the new key sealed.
        assert!(open(&KeyRing::with_current(key(1)), &new, &ctx.object_key, None).is_err());
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_errors_hold_no_key() {
        use base64::Engine;
        let bytes = [9u8; 32];
        let hex_key = Key::parse(&hex::encode(bytes)).unwrap();
        let b64 = Key::parse(&base64::engine::general_purpose::STANDARD.encode(bytes)).unwrap();
        assert_eq!(hex_key.id(), b64.id());
        assert_eq!(hex_key.id().len(), 16);
        assert!(!format!("{hex_key:?}").contains(&hex::encode(bytes)));
        let short = "00112233";
        let err = Key::parse(short).unwrap_err();
        assert!(!err.contains(short) && err.contains("32 bytes"), "{err}");
        let err = KeyRing::from_texts(Some("not a key!"), None).unwrap_err();
        assert!(
            err.starts_with("LEGACY_BACKUP_KEY ") && !err.contains("not a key"),
            "{err}"
        );
        assert!(KeyRing::from_texts(None, Some(&hex::encode(bytes))).is_err());
        assert!(KeyRing::from_texts(None, None).unwrap().current().is_none());
        assert!(KeyRing::from_texts(Some("  "), Some(""))
            .unwrap()
            .current()
            .is_none());
    }
}

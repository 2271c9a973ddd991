//! Sealing bench, run by scripts/bench_seal.sh on real snapshot bodies (written out of the
//! cluster from `legacy_backup.snapshots.body`): the time of the crate's own
//! `storage::seal::seal` and `storage::seal::open` per snapshot, as the worker seals before
//! upload and a fetch opens. Reports; asserts nothing about time.
//!
//! Usage: bench_seal <rounds> <label>=<file> [<label>=<file> ...]
//! Prints one line per measurement, `label op ms bytes`, op one of:
//! - `seal`:   seal_owned(key, context, body), the worker's call: it hands over the body it read
//!   (the copy handed over is made before the clock starts; the sha256 is the recorded one);
//! - `open`:   open(ring, sealed, key, Some(context)), which decrypts and checks the sha256 again;
//! - `sha256`: sha256_hex(body) alone, for reference (the take computes it; seal does not);
//! - `aead`:   for reference, the cipher alone: XChaCha20-Poly1305 `encrypt_in_place_detached`
//!   over a buffer already holding the body (no allocation, no envelope, no copy; the copy into
//!   the buffer is not timed). What `seal` costs beyond it is its buffers and copies.
//!
//! The files are measured in turn within each round (the order rotates every round), after one
//! untimed warm-up seal and open per file, which also checks that the round trip gives the body back.

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::XChaCha20Poly1305;
use legacy_backup::storage::seal::{open, seal, seal_owned, sha256_hex, Context, Key, KeyRing};
use std::hint::black_box;
use std::time::Instant;

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .get(1)
        .and_then(|r| r.parse().ok())
        .expect("usage: bench_seal <rounds> <label>=<file> ...");
    let mut key_bytes = [0u8; 32];
    for (i, b) in key_bytes.iter_mut().enumerate() {
        *b = fastrand::u8(..) ^ i as u8;
    }
    let key = Key::from_bytes(key_bytes);
    let cipher = XChaCha20Poly1305::new(key_bytes.as_slice().into());
    let ring = KeyRing::with_current(key.clone());
    let inputs: Vec<(String, Vec<u8>, Context)> = args[2..]
        .iter()
        .map(|a| {
            let (label, path) = a.split_once('=').expect("<label>=<file>");
            let body = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // Shaped like the worker's: the object key, the snapshot's id, its session.
            let context = Context {
                object_key: format!(
                    "backups/bench-{label}/categorization-2026-01-01T00-00-00-000Z.json"
                ),
                object_id: format!("00000000-0000-4000-8000-{:012}", label.len()),
                session_id: format!("bench-{label}"),
                sha256: sha256_hex(&body),
            };
            (label.to_string(), body, context)
        })
        .collect();
    for (label, body, context) in &inputs {
        let sealed = seal(&key, context, body);
        let opened = open(&ring, &sealed, &context.object_key, Some(context))
            .unwrap_or_else(|e| panic!("{label}: the sealed body does not open: {e}"));
        assert!(
            opened.plaintext == *body,
            "{label}: round trip changed the body"
        );
        eprintln!(
            "{label}: {} bytes, sealed {} bytes (+{})",
            body.len(),
            sealed.len(),
            sealed.len() - body.len()
        );
    }
    for round in 0..rounds {
        for i in 0..inputs.len() {
            let (label, body, context) = &inputs[(i + round) % inputs.len()];
            let owned = body.clone();
            let t = Instant::now();
            let sealed = black_box(seal_owned(&key, context, black_box(owned)));
            let seal_ms = ms(t);
            let t = Instant::now();
            let opened = black_box(open(&ring, &sealed, &context.object_key, Some(context)));
            let open_ms = ms(t);
            assert!(opened.is_ok());
            drop(opened);
            drop(sealed);
            let t = Instant::now();
            black_box(sha256_hex(black_box(body)));
            let sha_ms = ms(t);
            let mut buffer = body.clone();
            let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
            let t = Instant::now();
            let tag = cipher
                .encrypt_in_place_detached(&nonce, b"header", black_box(&mut buffer))
                .expect("in-memory encryption");
            let aead_ms = ms(t);
            black_box((tag, buffer));
            let n = body.len();
            println!("{label} seal {seal_ms:.3} {n}");
            println!("{label} open {open_ms:.3} {n}");
            println!("{label} sha256 {sha_ms:.3} {n}");
            println!("{label} aead {aead_ms:.3} {n}");
        }
    }
}

//! The object-storage client against a real S3 server that verifies SigV4 (s3s-fs).
//! Marked `#[ignore]` so that `cargo test`/`cargo pgrx test` (which have no S3 server) leave them
//! out; tests/integration/t_s3_client.sh starts s3s-fs, sets LB_S3_* and runs them with
//! `--ignored`. Without those variables each test fails rather than passing vacuously.

use legacy_backup::storage::{md5_hex, Client, Config, StorageError};
use std::time::Duration;

fn config() -> Config {
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} must be set (run tests/integration/t_s3_client.sh)"))
    };
    Config {
        endpoint: var("LB_S3_ENDPOINT"),
        bucket: var("LB_S3_BUCKET"),
        region: "auto".into(),
        access_key_id: var("LB_S3_ACCESS_KEY"),
        secret_access_key: var("LB_S3_SECRET_KEY"),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(20),
        max_attempts: 3,
        backoff: Duration::from_millis(50),
    }
}

#[test]
#[ignore = "needs s3s-fs: run tests/integration/t_s3_client.sh"]
fn put_head_get_with_odd_keys() {
    let client = Client::new(config()).unwrap();
    for key in [
        "backups/s1/categorization-2025-12-09T10-20-30-123Z.json",
        "documents/s1/a b+c=d(1).pdf",
        "documents/s1/ümlaut & co/ü.msg",
    ] {
        let body = format!("{{\"key\":{key:?}}}").into_bytes();
        let etag = client.put_object(key, &body).unwrap();
        assert_eq!(etag, md5_hex(&body), "{key}");
        let info = client.head_object(key).unwrap().expect("object exists");
        assert_eq!(info.size, body.len() as u64);
        assert_eq!(info.etag, md5_hex(&body));
        assert_eq!(client.get_object(key).unwrap().unwrap(), body);
    }
    assert_eq!(client.head_object("documents/s1/missing").unwrap(), None);
    assert_eq!(client.get_object("documents/s1/missing").unwrap(), None);
}

#[test]
#[ignore = "needs s3s-fs: run tests/integration/t_s3_client.sh"]
fn listing_follows_continuation_tokens_and_deletes_in_batches() {
    let client = Client::new(config()).unwrap();
    let keys: Vec<String> = (0..2100)
        .map(|i| format!("documents/page-test/{i:05} x+y.pdf"))
        .collect();
    for k in &keys {
        client.put_object(k, b"x").unwrap();
    }
    client
        .put_object("documents/page-testx/neighbour.pdf", b"n")
        .unwrap();
    let mut pages = 0;
    let listed = client
        .list_all("documents/page-test/", |_| pages += 1)
        .unwrap();
    assert_eq!(listed.len(), 2100);
    assert_eq!(pages, 3, "1000 + 1000 + 100");
    let mut deleted = 0;
    for batch in keys.chunks(1000) {
        let outcome = client.delete_batch(batch).unwrap();
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        deleted += outcome.deleted.len();
    }
    assert_eq!(deleted, 2100);
    assert!(client
        .list_all("documents/page-test/", |_| {})
        .unwrap()
        .is_empty());
    assert_eq!(
        client
            .list_all("documents/page-testx/", |_| {})
            .unwrap()
            .len(),
        1,
        "neighbour prefix untouched"
    );
}

#[test]
#[ignore = "needs s3s-fs: run tests/integration/t_s3_client.sh"]
fn a_wrong_secret_is_refused_and_not_retried() {
    let mut c = config();
    c.secret_access_key = "definitely-not-the-secret".into();
    let client = Client::new(c).unwrap();
    let err = client.put_object("backups/s1/x.json", b"{}").unwrap_err();
    match &err {
        StorageError::Http { status, .. } => assert!(*status == 403 || *status == 400, "{err}"),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("definitely-not-the-secret"));
}

//! Cleanup bench, run by scripts/bench_cleanup.sh against s3s-fs: deleting every object under a
//! prefix with batched DeleteObjects (legacy_backup's way) vs the approach it replaces (list once,
//! then one DELETE per key). The script refills the prefix before each run.
//! Usage: bench_cleanup <batched|per-key> <prefix>; prints `requests ms deleted`.

use legacy_backup::storage::{Client, Config};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, prefix) = (args[1].as_str(), args[2].as_str());
    let var = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("{n} must be set"));
    let client = Client::new(Config {
        endpoint: var("LB_S3_ENDPOINT"),
        bucket: var("LB_S3_BUCKET"),
        region: "auto".into(),
        access_key_id: var("LB_S3_ACCESS_KEY"),
        secret_access_key: var("LB_S3_SECRET_KEY"),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(60),
        max_attempts: 3,
        backoff: Duration::from_millis(100),
    })
    .expect("client");
    let start = Instant::now();
    let keys: Vec<String> = client
        .list_all(prefix, |_| {})
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut deleted = 0;
    match mode {
        "batched" => {
            for batch in keys.chunks(legacy_backup::storage::MAX_KEYS_PER_REQUEST) {
                let outcome = client.delete_batch(batch).expect("delete batch");
                assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
                deleted += outcome.deleted.len();
            }
        }
        "per-key" => {
            for key in &keys {
                client.delete_object(key).expect("delete");
                deleted += 1;
            }
        }
        other => panic!("unknown mode {other}"),
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    println!("{} {:.1} {}", client.requests_sent(), ms, deleted);
}

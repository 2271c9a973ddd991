//! The object-storage client (Cloudflare R2 through the S3 API). Plain Rust with no Postgres
//! calls, so it is unit-tested with `cargo test` and exercised against s3s-fs in integration tests.
//!
//! - SigV4 with aws-sigv4, set up as S3 needs: `x-amz-content-sha256` on every request, the path
//!   percent-encoded once by us (keys like `a b+c=d(1).json`), no path normalization. Region
//!   `auto` and path-style URLs, as R2 expects.
//! - No `x-amz-checksum-*` headers (R2 rejected the SDKs' defaults in 2025); `Content-MD5` on
//!   uploads and on DeleteObjects (which requires it).
//! - reqwest's blocking client with connect and total timeouts. Timeouts, connection errors, 5xx
//!   and 429 are retried with exponential backoff and jitter; other 4xx never are.
//! - Listing follows every continuation token; DeleteObjects goes in batches of at most 1000 keys
//!   and reads each key's error from the response.
//! - Nothing here ever formats the secret key into a message.

pub mod xml;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;
use std::time::{Duration, SystemTime};

/// S3 and R2 return at most 1000 keys per listing page and accept at most 1000 per delete.
pub const MAX_KEYS_PER_REQUEST: usize = 1000;

/// Everything but RFC 3986 unreserved characters is escaped (S3's rule for keys and query values).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Clone)]
pub struct Config {
    /// e.g. `https://<account>.r2.cloudflarestorage.com`, or `http://127.0.0.1:9000` in tests.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff; doubled per retry, with jitter.
    pub backoff: Duration,
}

impl fmt::Debug for Config {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The server answered with an error status.
    Http {
        status: u16,
        code: String,
        message: String,
        operation: &'static str,
    },
    /// No usable answer: connection refused, timeout, broken body.
    Transport {
        message: String,
        operation: &'static str,
    },
    /// A response we could not read, or a request we refuse to send.
    Invalid(String),
}

impl StorageError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Http { status, .. } => *status >= 500 || *status == 429,
            StorageError::Transport { .. } => true,
            StorageError::Invalid(_) => false,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Http {
                status,
                code,
                message,
                operation,
            } => {
                write!(f, "{operation} failed: HTTP {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            StorageError::Transport { message, operation } => {
                write!(f, "{operation} failed: {message}")
            }
            StorageError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for StorageError {}

pub type StorageResult<T> = Result<T, StorageError>;

/// What HEAD says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// Without quotes; for a single-part upload, the hex MD5 of the body.
    pub etag: String,
}

/// The outcome of deleting a batch of keys.
#[derive(Debug, Default, Clone)]
pub struct DeleteOutcome {
    pub deleted: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// A request, before signing: method, path below the endpoint (already encoded), query pairs
/// (unencoded), extra headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct Client {
    config: Config,
    http: reqwest::blocking::Client,
    /// HTTP requests sent, retries included (reported by the benches).
    requests: std::sync::atomic::AtomicU64,
}

/// Percent-encodes an object key, segment by segment, keeping the `/` separators.
pub fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|segment| utf8_percent_encode(segment, UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn encode_query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, UNRESERVED),
                utf8_percent_encode(v, UNRESERVED)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(body))
}

/// The hex MD5 of a body: what S3 returns as the ETag of a single-part upload.
pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

impl Config {
    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/{}/{}",
            self.endpoint.trim_end_matches('/'),
            utf8_percent_encode(&self.bucket, UNRESERVED),
            encode_key(key)
        )
    }

    fn bucket_url(&self, query: &[(&str, String)]) -> String {
        format!(
            "{}/{}?{}",
            self.endpoint.trim_end_matches('/'),
            utf8_percent_encode(&self.bucket, UNRESERVED),
            encode_query(query)
        )
    }

    pub fn plan_put(&self, key: &str, body: &[u8]) -> PlannedRequest {
        PlannedRequest {
            method: "PUT",
            url: self.object_url(key),
            headers: vec![
                ("content-md5".into(), content_md5(body)),
                ("content-type".into(), "application/json".into()),
            ],
            body: body.to_vec(),
        }
    }

    pub fn plan_head(&self, key: &str) -> PlannedRequest {
        PlannedRequest {
            method: "HEAD",
            url: self.object_url(key),
            headers: vec![],
            body: vec![],
        }
    }

    pub fn plan_get(&self, key: &str) -> PlannedRequest {
        PlannedRequest {
            method: "GET",
            url: self.object_url(key),
            headers: vec![],
            body: vec![],
        }
    }

    pub fn plan_list(
        &self,
        prefix: &str,
        continuation: Option<&str>,
        max_keys: usize,
    ) -> PlannedRequest {
        let mut query = vec![
            ("list-type", "2".to_string()),
            (
                "max-keys",
                max_keys.clamp(1, MAX_KEYS_PER_REQUEST).to_string(),
            ),
            ("prefix", prefix.to_string()),
        ];
        if let Some(token) = continuation {
            query.push(("continuation-token", token.to_string()));
        }
        PlannedRequest {
            method: "GET",
            url: self.bucket_url(&query),
            headers: vec![],
            body: vec![],
        }
    }

    pub fn plan_delete(&self, keys: &[String]) -> StorageResult<PlannedRequest> {
        if keys.is_empty() || keys.len() > MAX_KEYS_PER_REQUEST {
            return Err(StorageError::Invalid(format!(
                "a delete batch holds 1 to {MAX_KEYS_PER_REQUEST} keys, not {}",
                keys.len()
            )));
        }
        let body = xml::delete_request(keys).into_bytes();
        Ok(PlannedRequest {
            method: "POST",
            url: self.bucket_url(&[("delete", String::new())]),
            headers: vec![
                ("content-md5".into(), content_md5(&body)),
                ("content-type".into(), "application/xml".into()),
            ],
            body,
        })
    }

    /// Signs a planned request: returns every header to send (ours and the signature's).
    pub fn sign(
        &self,
        req: &PlannedRequest,
        at: SystemTime,
    ) -> StorageResult<Vec<(String, String)>> {
        let identity = Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            None,
            "legacy_backup",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(at)
            .settings(settings)
            .build()
            .map_err(|e| StorageError::Invalid(format!("cannot sign request: {e}")))?
            .into();
        let signable = SignableRequest::new(
            req.method,
            req.url.as_str(),
            req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&req.body),
        )
        .map_err(|e| StorageError::Invalid(format!("cannot sign request: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| StorageError::Invalid(format!("cannot sign request: {e}")))?
            .into_parts();
        let mut headers = req.headers.clone();
        headers.extend(
            instructions
                .headers()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Ok(headers)
    }
}

/// Backoff before retry `attempt` (1-based): base * 2^(attempt-1), plus up to 50% jitter.
pub fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(10));
    let jitter = exp.mul_f64(fastrand::f64() * 0.5);
    exp + jitter
}

impl Client {
    /// Builds the HTTP client. reqwest's blocking client starts a thread: callers inside
    /// PostgreSQL build it with signals blocked (see `worker::with_signals_blocked`).
    pub fn new(config: Config) -> StorageResult<Client> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| StorageError::Invalid(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            config,
            http,
            requests: Default::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn requests_sent(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends with retries; returns status, headers and body of the final answer.
    fn execute(
        &self,
        req: &PlannedRequest,
        operation: &'static str,
    ) -> StorageResult<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
        let mut attempt = 1;
        loop {
            let result = self.send_once(req, operation);
            match result {
                Err(e) if e.is_retryable() && attempt < self.config.max_attempts => {
                    std::thread::sleep(backoff_delay(self.config.backoff, attempt));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn send_once(
        &self,
        req: &PlannedRequest,
        operation: &'static str,
    ) -> StorageResult<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
        let headers = self.config.sign(req, SystemTime::now())?;
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("known method");
        let mut builder = self.http.request(method, &req.url);
        for (k, v) in &headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if !req.body.is_empty() || req.method == "PUT" || req.method == "POST" {
            builder = builder.body(req.body.clone());
        }
        let transport = |e: reqwest::Error| StorageError::Transport {
            message: describe_transport(&e),
            operation,
        };
        let response = builder.send().map_err(transport)?;
        let status = response.status().as_u16();
        let response_headers = response.headers().clone();
        let body = response.bytes().map_err(transport)?.to_vec();
        if (200..300).contains(&status) {
            return Ok((status, response_headers, body));
        }
        let err = xml::parse_error(&String::from_utf8_lossy(&body));
        Err(StorageError::Http {
            status,
            code: err.code,
            message: err.message,
            operation,
        })
    }

    /// Uploads a body; returns the ETag the server gave it.
    pub fn put_object(&self, key: &str, body: &[u8]) -> StorageResult<String> {
        let (_, headers, _) = self.execute(&self.config.plan_put(key, body), "PutObject")?;
        Ok(etag_of(&headers))
    }

    /// Size and ETag of an object, or None when it does not exist.
    pub fn head_object(&self, key: &str) -> StorageResult<Option<ObjectInfo>> {
        match self.execute(&self.config.plan_head(key), "HeadObject") {
            Ok((_, headers, _)) => {
                let size = headers
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        StorageError::Invalid("HeadObject answer has no Content-Length".into())
                    })?;
                Ok(Some(ObjectInfo {
                    size,
                    etag: etag_of(&headers),
                }))
            }
            Err(StorageError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn get_object(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        match self.execute(&self.config.plan_get(key), "GetObject") {
            Ok((_, _, body)) => Ok(Some(body)),
            Err(StorageError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object under a prefix, following continuation tokens; `on_page` sees each page.
    pub fn list_all(
        &self,
        prefix: &str,
        mut on_page: impl FnMut(&[xml::ListedObject]),
    ) -> StorageResult<Vec<xml::ListedObject>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .config
                .plan_list(prefix, token.as_deref(), MAX_KEYS_PER_REQUEST);
            let (_, _, body) = self.execute(&req, "ListObjectsV2")?;
            let page =
                xml::parse_list(&String::from_utf8_lossy(&body)).map_err(StorageError::Invalid)?;
            // A page may only hold keys under the prefix; anything else is a server bug we refuse to act on.
            if let Some(bad) = page.contents.iter().find(|o| !o.key.starts_with(prefix)) {
                return Err(StorageError::Invalid(format!(
                    "listing of {prefix:?} returned a key outside it: {:?}",
                    bad.key
                )));
            }
            on_page(&page.contents);
            all.extend(page.contents);
            match (page.is_truncated, page.next_continuation_token) {
                (true, Some(next)) => token = Some(next),
                (true, None) => {
                    return Err(StorageError::Invalid(
                        "truncated listing without a continuation token".into(),
                    ))
                }
                (false, _) => return Ok(all),
            }
        }
    }

    /// Deletes one object (what the old cleanup did per key; kept for comparison in the bench).
    pub fn delete_object(&self, key: &str) -> StorageResult<()> {
        let req = PlannedRequest {
            method: "DELETE",
            url: self.config.object_url(key),
            headers: vec![],
            body: vec![],
        };
        self.execute(&req, "DeleteObject").map(|_| ())
    }

    /// Deletes up to 1000 keys in one request; per-key failures are reported, not raised.
    pub fn delete_batch(&self, keys: &[String]) -> StorageResult<DeleteOutcome> {
        let (_, _, body) = self.execute(&self.config.plan_delete(keys)?, "DeleteObjects")?;
        let result =
            xml::parse_delete(&String::from_utf8_lossy(&body)).map_err(StorageError::Invalid)?;
        Ok(DeleteOutcome {
            deleted: result.deleted.into_iter().map(|d| d.key).collect(),
            failed: result
                .errors
                .into_iter()
                .map(|e| {
                    (
                        e.key,
                        format!("{} {}", e.code, e.message).trim().to_string(),
                    )
                })
                .collect(),
        })
    }
}

fn etag_of(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}

/// A transport error's cause chain, without the URL (it names the endpoint, which is fine, but
/// the chain is what tells a DBA what happened).
fn describe_transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request error"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            endpoint: "https://acct.r2.cloudflarestorage.com/".into(),
            bucket: "legacy-import".into(),
            region: "auto".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            max_attempts: 3,
            backoff: Duration::from_millis(100),
        }
    }

    #[test]
    fn keys_are_encoded_per_segment() {
        assert_eq!(
            encode_key("backups/s1/a b+c=d(1).json"),
            "backups/s1/a%20b%2Bc%3Dd%281%29.json"
        );
        assert_eq!(encode_key("documents/s1/ü.pdf"), "documents/s1/%C3%BC.pdf");
        assert_eq!(encode_key("a/~x_y-z.1"), "a/~x_y-z.1");
    }

    #[test]
    fn urls_are_path_style() {
        let c = config();
        assert_eq!(
            c.plan_head("pst/s1/f.pst").url,
            "https://acct.r2.cloudflarestorage.com/legacy-import/pst/s1/f.pst"
        );
        let list = c.plan_list("documents/s1/", Some("a/b+c"), 5000);
        assert_eq!(
            list.url,
            "https://acct.r2.cloudflarestorage.com/legacy-import?list-type=2&max-keys=1000&prefix=documents%2Fs1%2F&continuation-token=a%2Fb%2Bc"
        );
    }

    #[test]
    fn uploads_and_deletes_carry_content_md5_and_no_checksum_headers() {
        let c = config();
        let put = c.plan_put("backups/s1/x.json", b"{}");
        assert!(put
            .headers
            .iter()
            .any(|(k, v)| k == "content-md5" && v == "mZFLkyvTelC5g8XnyQrpOw=="));
        let del = c.plan_delete(&["a".into(), "b".into()]).unwrap();
        assert_eq!(del.method, "POST");
        assert!(del.url.ends_with("?delete="));
        assert!(del.headers.iter().any(|(k, _)| k == "content-md5"));
        for req in [&put, &del] {
            let signed = c
                .sign(
                    req,
                    SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_275_630),
                )
                .unwrap();
            assert!(
                signed
                    .iter()
                    .all(|(k, _)| !k.to_ascii_lowercase().starts_with("x-amz-checksum")),
                "{signed:?}"
            );
            assert!(signed
                .iter()
                .any(|(k, v)| k == "x-amz-content-sha256" && v.len() == 64));
            assert!(signed.iter().any(|(k, v)| k == "authorization"
                && v.starts_with(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251209/auto/s3/aws4_request"
                )));
            assert!(
                signed.iter().all(|(_, v)| !v.contains("wJalrXUtnFEMI")),
                "secret leaked into a header"
            );
        }
    }

    #[test]
    fn delete_batches_are_bounded() {
        let c = config();
        assert!(c.plan_delete(&[]).is_err());
        let keys: Vec<String> = (0..=MAX_KEYS_PER_REQUEST)
            .map(|i| format!("k{i}"))
            .collect();
        assert!(c.plan_delete(&keys).is_err());
        assert!(c.plan_delete(&keys[..MAX_KEYS_PER_REQUEST]).is_ok());
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let http = |status| StorageError::Http {
            status,
            code: String::new(),
            message: String::new(),
            operation: "PutObject",
        };
        assert!(http(500).is_retryable());
        assert!(http(503).is_retryable());
        assert!(http(429).is_retryable());
        assert!(!http(403).is_retryable());
        assert!(!http(404).is_retryable());
        assert!(!http(400).is_retryable());
        assert!(StorageError::Transport {
            message: "timed out".into(),
            operation: "PutObject"
        }
        .is_retryable());
        assert!(!StorageError::Invalid("x".into()).is_retryable());
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 1..6 {
            let d = backoff_delay(base, attempt);
            let floor = base * (1 << (attempt - 1));
            assert!(
                d >= floor && d <= floor.mul_f64(1.5),
                "attempt {attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let text = format!("{:?}", config());
        assert!(!text.contains("wJalrXUtnFEMI") && text.contains("<hidden>"));
    }

    #[test]
    fn unreachable_server_is_a_retryable_transport_error() {
        let mut c = config();
        c.endpoint = "http://127.0.0.1:1".into();
        c.max_attempts = 2;
        c.backoff = Duration::from_millis(10);
        let client = Client::new(c).unwrap();
        let err = client.head_object("x").unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(
            err.to_string()
                .starts_with("HeadObject failed: could not connect"),
            "{err}"
        );
    }
}

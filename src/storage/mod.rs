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
//! - Response bodies are capped: GetObject at 1 GiB, every other answer at 16 MiB. A declared
//!   Content-Length over the cap is refused before reading, and the read itself stops one byte
//!   past it, so a broken or hostile endpoint cannot make the backend allocate without bound.
//! - Listing refuses a continuation token it has already seen and stops after
//!   `MAX_LIST_PAGES` pages, so a broken server cannot make it loop forever.
//! - The endpoint must be `https://`; plain `http://` is accepted only for a loopback host (tests).
//!   Endpoints with `user:pass@`, a query string or a fragment are refused.
//! - Redirects are never followed (that would resend signed requests to another host): a 3xx is a
//!   non-retryable HTTP error.
//! - Nothing here ever formats the secret key into a message.

pub mod seal;
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
use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::time::{Duration, SystemTime};

/// S3 and R2 return at most 1000 keys per listing page and accept at most 1000 per delete.
pub const MAX_KEYS_PER_REQUEST: usize = 1000;

/// GetObject bodies: a snapshot is one PostgreSQL value (at most 1 GB), so more is never ours.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// Every other answer (listing pages, delete results, error bodies): 1000 keys of XML stay under 2 MiB.
pub const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// Listing pages followed at most: 100 million keys at 1000 a page, a backstop against a server
/// that never stops answering "truncated".
pub const MAX_LIST_PAGES: usize = 100_000;

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
    /// An answer larger than we accept for this operation; not read past the limit.
    TooLarge { limit: u64, operation: &'static str },
    /// A response we could not read, or a request we refuse to send.
    Invalid(String),
}

impl StorageError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Http { status, .. } => *status >= 500 || *status == 429,
            StorageError::Transport { .. } => true,
            StorageError::TooLarge { .. } | StorageError::Invalid(_) => false,
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
            StorageError::TooLarge { limit, operation } => write!(
                f,
                "{operation} failed: the answer is larger than the {} limit",
                show_bytes(*limit)
            ),
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

impl ObjectInfo {
    /// Whether this is the object uploaded with that size and ETag: the one check every
    /// verification (after upload, before cleanup) makes.
    pub fn is(&self, size: u64, etag: &str) -> bool {
        self.size == size && self.etag == etag
    }
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

    /// A PutObject. `write_once` adds `If-None-Match: *`: the server refuses (412) to replace
    /// an object that exists (R2 honours it; a backup is never overwritten by an upload).
    pub fn plan_put(&self, key: &str, body: &[u8], write_once: bool) -> PlannedRequest {
        let content_type = if seal::is_sealed(body) {
            "application/octet-stream"
        } else {
            "application/json"
        };
        let mut headers = vec![
            ("content-md5".into(), content_md5(body)),
            ("content-type".into(), content_type.into()),
        ];
        if write_once {
            headers.push(("if-none-match".into(), "*".into()));
        }
        PlannedRequest {
            method: "PUT",
            url: self.object_url(key),
            headers,
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

/// `1 GiB`, `16 MiB`, or a byte count when not a whole number of those.
fn show_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n => format!("{n} bytes"),
    }
}

/// Refuses an endpoint that would send signed requests and snapshot contents in clear over a
/// network, or that carries credentials or a query we would sign and send along.
pub fn validate_endpoint(endpoint: &str) -> StorageResult<()> {
    // The endpoint is never echoed: a refused one may hold a password.
    let invalid = |why: &str| {
        Err(StorageError::Invalid(format!(
            "legacy_backup.r2_endpoint {why}"
        )))
    };
    // http::Uri drops a fragment, so look for it in the text.
    if endpoint.contains('#') {
        return invalid("must not contain a query string or a fragment");
    }
    let uri: http::Uri = match endpoint.parse() {
        Ok(uri) => uri,
        Err(_) => return invalid("is not a valid URL"),
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return invalid("must not contain user:password@ (set the keys in their own settings)");
    }
    if uri.query().is_some() {
        return invalid("must not contain a query string or a fragment");
    }
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return invalid("has no host");
    };
    let scheme = uri.scheme_str().unwrap_or_default();
    if scheme.eq_ignore_ascii_case("https") {
        return Ok(());
    }
    if scheme.eq_ignore_ascii_case("http") && is_loopback_host(host) {
        return Ok(());
    }
    invalid("must use https:// (plain http:// is accepted only for 127.0.0.0/8, ::1 or localhost, for tests)")
}

/// 127.0.0.0/8, ::1 (`host` as `http::Uri` gives it, in brackets) or `localhost`.
fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads at most `limit` bytes: `None` when the body holds more (it is not read further).
fn read_capped(
    reader: impl Read,
    limit: u64,
    size_hint: Option<u64>,
) -> std::io::Result<Option<Vec<u8>>> {
    let capacity = size_hint.unwrap_or(0).min(limit);
    let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut body)?;
    Ok((body.len() as u64 <= limit).then_some(body))
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
        validate_endpoint(&config.endpoint)?;
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(4)
            // Following a redirect would resend the signed request to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StorageError::Invalid(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            config,
            http,
            requests: Default::default(),
        })
    }

    /// The same client for another bucket (shares the connection pool).
    pub fn for_bucket(&self, bucket: &str) -> Client {
        Client {
            config: Config {
                bucket: bucket.to_string(),
                ..self.config.clone()
            },
            http: self.http.clone(),
            requests: Default::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn requests_sent(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends with retries; returns status, headers and body (at most `limit` bytes) of the final
    /// answer.
    fn execute(
        &self,
        req: &PlannedRequest,
        operation: &'static str,
        limit: u64,
    ) -> StorageResult<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
        let mut attempt = 1;
        loop {
            let result = self.send_once(req, operation, limit);
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
        limit: u64,
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
        // A HEAD answer's Content-Length is the object's size, not a body that follows.
        let declared = if req.method == "HEAD" {
            None
        } else {
            content_length(&response_headers)
        };
        let body = if declared.is_some_and(|n| n > limit) {
            None
        } else {
            read_capped(response, limit, declared).map_err(|e| StorageError::Transport {
                message: describe_read(&e),
                operation,
            })?
        };
        if (200..300).contains(&status) {
            return body
                .map(|body| (status, response_headers, body))
                .ok_or(StorageError::TooLarge { limit, operation });
        }
        // An error keeps its status (and so its retry class) even when its body is too large.
        let (code, mut message) = match body {
            Some(body) => {
                let err = xml::parse_error(&String::from_utf8_lossy(&body));
                (err.code, err.message)
            }
            None => (
                String::new(),
                format!("error body larger than {}, not read", show_bytes(limit)),
            ),
        };
        if message.is_empty() && (300..400).contains(&status) {
            message = "redirects are not followed".into();
        }
        Err(StorageError::Http {
            status,
            code,
            message,
            operation,
        })
    }

    /// Uploads a body, replacing whatever is at the key; returns the ETag the server gave it.
    /// Only for putting back a backup found missing or forged (the scrub's repair).
    pub fn put_object(&self, key: &str, body: &[u8]) -> StorageResult<String> {
        let (_, headers, _) = self.execute(
            &self.config.plan_put(key, body, false),
            "PutObject",
            MAX_RESPONSE_BYTES,
        )?;
        Ok(etag_of(&headers))
    }

    /// Uploads a body unless the key exists (`If-None-Match: *`). `Ok(None)`: an object is
    /// already there (412), left as it is; the caller compares it.
    pub fn put_object_once(&self, key: &str, body: &[u8]) -> StorageResult<Option<String>> {
        match self.execute(
            &self.config.plan_put(key, body, true),
            "PutObject",
            MAX_RESPONSE_BYTES,
        ) {
            Ok((_, headers, _)) => Ok(Some(etag_of(&headers))),
            Err(StorageError::Http { status: 412, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Size and ETag of an object, or None when it does not exist.
    pub fn head_object(&self, key: &str) -> StorageResult<Option<ObjectInfo>> {
        match self.execute(
            &self.config.plan_head(key),
            "HeadObject",
            MAX_RESPONSE_BYTES,
        ) {
            Ok((_, headers, _)) => {
                let size = content_length(&headers).ok_or_else(|| {
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
        match self.execute(&self.config.plan_get(key), "GetObject", MAX_OBJECT_BYTES) {
            Ok((_, _, body)) => Ok(Some(body)),
            Err(StorageError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object under a prefix, following continuation tokens; `on_page` sees each page.
    pub fn list_all(
        &self,
        prefix: &str,
        on_page: impl FnMut(&[xml::ListedObject]),
    ) -> StorageResult<Vec<xml::ListedObject>> {
        self.list_pages(prefix, MAX_LIST_PAGES, on_page)
    }

    /// `list_all` with the page cap as a parameter (tests use a small one).
    fn list_pages(
        &self,
        prefix: &str,
        max_pages: usize,
        mut on_page: impl FnMut(&[xml::ListedObject]),
    ) -> StorageResult<Vec<xml::ListedObject>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = HashSet::new();
        for page_number in 1..=max_pages {
            let req = self
                .config
                .plan_list(prefix, token.as_deref(), MAX_KEYS_PER_REQUEST);
            let (_, _, body) = self.execute(&req, "ListObjectsV2", MAX_RESPONSE_BYTES)?;
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
                (true, Some(next)) => {
                    // A token seen before would list the same pages again, forever.
                    if !seen.insert(next.clone()) {
                        return Err(StorageError::Invalid(format!(
                            "listing of {prefix:?} returned a continuation token already seen (page {page_number}); refusing to loop"
                        )));
                    }
                    token = Some(next);
                }
                (true, None) => {
                    return Err(StorageError::Invalid(
                        "truncated listing without a continuation token".into(),
                    ))
                }
                (false, _) => return Ok(all),
            }
        }
        Err(StorageError::Invalid(format!(
            "listing of {prefix:?} did not end after {max_pages} pages; refusing to go on"
        )))
    }

    /// Deletes one object (what the old cleanup did per key; kept for comparison in the bench).
    pub fn delete_object(&self, key: &str) -> StorageResult<()> {
        let req = PlannedRequest {
            method: "DELETE",
            url: self.config.object_url(key),
            headers: vec![],
            body: vec![],
        };
        self.execute(&req, "DeleteObject", MAX_RESPONSE_BYTES)
            .map(|_| ())
    }

    /// Deletes up to 1000 keys in one request; per-key failures are reported, not raised.
    pub fn delete_batch(&self, keys: &[String]) -> StorageResult<DeleteOutcome> {
        let (_, _, body) = self.execute(
            &self.config.plan_delete(keys)?,
            "DeleteObjects",
            MAX_RESPONSE_BYTES,
        )?;
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

fn content_length(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A failed body read: reqwest's own error when it is one (timeouts), else the I/O error.
fn describe_read(e: &std::io::Error) -> String {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<reqwest::Error>()) {
        return describe_transport(inner);
    }
    format!("reading the answer: {e}")
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
        let put = c.plan_put("backups/s1/x.json", b"{}", true);
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
        // Redirects are answers we refuse, not failures to wait out.
        for status in [301, 302, 303, 307, 308] {
            assert!(!http(status).is_retryable(), "{status}");
        }
        assert!(!StorageError::TooLarge {
            limit: MAX_RESPONSE_BYTES,
            operation: "ListObjectsV2"
        }
        .is_retryable());
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

    /// A loopback HTTP server: the n-th request (0-based) gets `answer(n)`, then the connection
    /// is closed. Returns the endpoint and the number of requests served.
    fn serve(
        answer: impl Fn(usize) -> Vec<u8> + Send + 'static,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let served = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // Our test requests carry no body: the head is all there is to read.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let n = served.fetch_add(1, Ordering::SeqCst);
                // The client hangs up on an oversized body: a failed write is expected then.
                let _ = stream.write_all(&answer(n));
            }
        });
        (endpoint, count)
    }

    /// An HTTP/1.1 answer; `headers` are extra lines, each ending in CRLF.
    fn answer(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut out =
            format!("HTTP/1.1 {status}\r\nConnection: close\r\n{headers}\r\n").into_bytes();
        out.extend_from_slice(body);
        out
    }

    fn with_length(status: &str, body: &[u8]) -> Vec<u8> {
        answer(status, &format!("Content-Length: {}\r\n", body.len()), body)
    }

    fn local_client(endpoint: &str) -> Client {
        let mut c = config();
        c.endpoint = endpoint.into();
        c.max_attempts = 3;
        c.backoff = Duration::from_millis(1);
        c.request_timeout = Duration::from_secs(30);
        Client::new(c).unwrap()
    }

    fn served(count: &std::sync::atomic::AtomicUsize) -> usize {
        count.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn write_once_uploads_send_if_none_match_and_a_412_is_not_an_error() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_lowercase());
                let status = if n == 0 {
                    "412 Precondition Failed"
                } else {
                    "200 OK"
                };
                let _ = stream.write_all(&with_length(status, b""));
            }
        });
        let client = local_client(&endpoint);
        assert_eq!(
            client.put_object_once("backups/s1/x.json", b"{}").unwrap(),
            None
        );
        client.put_object("backups/s1/x.json", b"{}").unwrap();
        let heads = heads.lock().unwrap();
        assert!(
            heads[0].contains("\r\nif-none-match: *\r\n"),
            "{}",
            heads[0]
        );
        // Signed, so a proxy cannot strip it without breaking the signature.
        assert!(heads[0].contains("if-none-match;"), "{}", heads[0]);
        assert!(!heads[1].contains("if-none-match"), "{}", heads[1]);
    }

    #[test]
    fn read_capped_allows_exactly_the_limit() {
        assert_eq!(
            read_capped(&b"abcd"[..], 4, None).unwrap().unwrap(),
            b"abcd"
        );
        assert_eq!(read_capped(&b"abcde"[..], 4, Some(5)).unwrap(), None);
        assert_eq!(
            read_capped(&b""[..], 4, Some(1 << 40)).unwrap().unwrap(),
            b""
        );
        assert_eq!(show_bytes(MAX_OBJECT_BYTES), "1 GiB");
        assert_eq!(show_bytes(MAX_RESPONSE_BYTES), "16 MiB");
        assert_eq!(show_bytes(1000), "1000 bytes");
    }

    #[test]
    fn a_declared_oversized_answer_is_refused_unread_and_not_retried() {
        // Only the header is sent: the client must give up on it, not wait for 16 GiB.
        let (endpoint, count) =
            serve(|_| answer("200 OK", "Content-Length: 17179869184\r\n", b"xx"));
        let err = local_client(&endpoint).delete_object("x").unwrap_err();
        assert_eq!(
            err,
            StorageError::TooLarge {
                limit: MAX_RESPONSE_BYTES,
                operation: "DeleteObject"
            }
        );
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "DeleteObject failed: the answer is larger than the 16 MiB limit"
        );
        assert_eq!(served(&count), 1, "not retried");

        let too_big = MAX_OBJECT_BYTES + 1;
        let (endpoint, count) =
            serve(move |_| answer("200 OK", &format!("Content-Length: {too_big}\r\n"), b"xx"));
        let err = local_client(&endpoint).get_object("s.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "GetObject failed: the answer is larger than the 1 GiB limit"
        );
        assert!(!err.is_retryable());
        assert_eq!(served(&count), 1, "not retried");
    }

    #[test]
    fn an_undeclared_oversized_answer_is_read_only_up_to_the_limit() {
        let limit = MAX_RESPONSE_BYTES as usize;
        // No Content-Length: the body runs until the server closes the connection.
        let (endpoint, count) = serve(move |n| answer("200 OK", "", &vec![b'x'; limit + n]));
        let client = local_client(&endpoint);
        client
            .delete_object("x")
            .expect("exactly the limit is accepted");
        let err = client.delete_object("x").unwrap_err();
        assert_eq!(
            err,
            StorageError::TooLarge {
                limit: MAX_RESPONSE_BYTES,
                operation: "DeleteObject"
            }
        );
        assert_eq!(served(&count), 2, "not retried");
        // GetObject has the larger limit: the same body is a snapshot we accept.
        let body = client.get_object("s.json").unwrap().unwrap();
        assert_eq!(body.len(), limit + 2);
    }

    #[test]
    fn an_oversized_error_body_keeps_its_status() {
        let (endpoint, count) =
            serve(|_| answer("503 Slow Down", "Content-Length: 17179869184\r\n", b""));
        let err = local_client(&endpoint).delete_object("x").unwrap_err();
        match &err {
            StorageError::Http {
                status: 503,
                message,
                ..
            } => assert!(message.contains("16 MiB"), "{err}"),
            other => panic!("expected HTTP 503, got {other:?}"),
        }
        assert!(err.is_retryable());
        assert_eq!(served(&count), 3, "retried as any 503");
        let (endpoint, _) =
            serve(|_| answer("404 Not Found", "Content-Length: 17179869184\r\n", b""));
        assert_eq!(local_client(&endpoint).get_object("s.json").unwrap(), None);
    }

    #[test]
    fn a_head_content_length_is_the_object_size_not_a_body() {
        let (endpoint, _) = serve(|_| {
            answer(
                "200 OK",
                "Content-Length: 5368709120\r\nETag: \"abc\"\r\n",
                b"",
            )
        });
        let info = local_client(&endpoint)
            .head_object("big.pst")
            .unwrap()
            .unwrap();
        assert_eq!(info.size, 5 << 30);
        assert_eq!(info.etag, "abc");
    }

    #[test]
    fn redirects_are_not_followed() {
        let (elsewhere, elsewhere_count) = serve(|_| with_length("200 OK", b"{}"));
        let location =
            format!("Location: {elsewhere}/legacy-import/s.json\r\nContent-Length: 0\r\n");
        let (endpoint, count) = serve(move |_| answer("307 Temporary Redirect", &location, b""));
        let err = local_client(&endpoint).get_object("s.json").unwrap_err();
        match &err {
            StorageError::Http {
                status: 307,
                message,
                operation: "GetObject",
                ..
            } => assert_eq!(message, "redirects are not followed"),
            other => panic!("expected HTTP 307, got {other:?}"),
        }
        assert!(!err.is_retryable());
        assert_eq!(served(&count), 1, "not retried");
        assert_eq!(
            served(&elsewhere_count),
            0,
            "the signed request went elsewhere"
        );
        // S3's own redirect answer keeps its code.
        let (endpoint, _) = serve(|_| {
            with_length(
                "301 Moved Permanently",
                b"<Error><Code>PermanentRedirect</Code><Message>use the other endpoint</Message></Error>",
            )
        });
        let err = local_client(&endpoint).delete_object("x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "DeleteObject failed: HTTP 301 PermanentRedirect: use the other endpoint"
        );
    }

    fn list_page(n: usize, token: Option<&str>) -> Vec<u8> {
        let tail = match token {
            Some(t) => format!(
                "<IsTruncated>true</IsTruncated><NextContinuationToken>{t}</NextContinuationToken>"
            ),
            None => "<IsTruncated>false</IsTruncated>".into(),
        };
        with_length(
            "200 OK",
            format!("<ListBucketResult><Contents><Key>p/k{n}</Key><Size>1</Size></Contents>{tail}</ListBucketResult>")
                .as_bytes(),
        )
    }

    #[test]
    fn a_continuation_token_seen_before_is_refused() {
        for tokens in [vec!["a", "a"], vec!["t1", "t2", "t1"]] {
            let pages = tokens.len();
            // Past the tokens the listing ends, so a client that does not check returns Ok.
            let (endpoint, count) = serve(move |n| list_page(n, tokens.get(n).copied()));
            let err = local_client(&endpoint).list_all("p/", |_| {}).unwrap_err();
            assert!(
                matches!(&err, StorageError::Invalid(m) if m.contains("continuation token already seen")),
                "{err}"
            );
            assert!(!err.is_retryable());
            assert_eq!(served(&count), pages);
        }
    }

    #[test]
    fn listing_stops_after_the_page_cap() {
        let (endpoint, count) = serve(|n| list_page(n, Some(&format!("t{n}"))));
        let client = local_client(&endpoint);
        let err = client.list_pages("p/", 3, |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "listing of \"p/\" did not end after 3 pages; refusing to go on"
        );
        assert_eq!(served(&count), 3);
    }

    #[test]
    fn endpoints_must_be_https_except_loopback() {
        for ok in [
            "https://acct.r2.cloudflarestorage.com",
            "https://acct.r2.cloudflarestorage.com/",
            "HTTPS://s3.example.com:8443",
            "http://127.0.0.1:9000",
            "http://127.8.9.10",
            "http://[::1]:9000",
            "http://localhost:9000",
            "http://LocalHost",
        ] {
            validate_endpoint(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("http://acct.r2.cloudflarestorage.com", "must use https://"),
            ("http://10.0.0.1:9000", "must use https://"),
            ("http://128.0.0.1", "must use https://"),
            ("http://[::2]", "must use https://"),
            ("http://localhost.example.com", "must use https://"),
            ("http://127.0.0.1.example.com", "must use https://"),
            ("ftp://127.0.0.1", "must use https://"),
            (
                "https://AKID:hunter2@acct.r2.cloudflarestorage.com",
                "user:password@",
            ),
            ("http://u:hunter2@127.0.0.1:9000", "user:password@"),
            (
                "https://acct.r2.cloudflarestorage.com/?X-Amz-Signature=hunter2",
                "query string",
            ),
            ("https://acct.r2.cloudflarestorage.com?", "query string"),
            ("https://acct.r2.cloudflarestorage.com/#hunter2", "fragment"),
            ("acct.r2.cloudflarestorage.com", "must use https://"),
            ("/just/a/path", "has no host"),
            ("", "not a valid URL"),
            ("https://a b", "not a valid URL"),
        ] {
            let err = validate_endpoint(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("legacy_backup.r2_endpoint "),
                "{bad}: {err}"
            );
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
        let mut c = config();
        c.endpoint = "http://acct.r2.cloudflarestorage.com".into();
        let err = Client::new(c)
            .err()
            .expect("plain http to a remote host is refused");
        assert_eq!(
            err.to_string(),
            "legacy_backup.r2_endpoint must use https:// (plain http:// is accepted only for 127.0.0.0/8, ::1 or localhost, for tests)"
        );
    }
}

//! S3 XML bodies: the DeleteObjects request, and the responses we read.

use quick_xml::de::from_str;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ListBucketResult {
    #[serde(default)]
    pub contents: Vec<ListedObject>,
    #[serde(default)]
    pub is_truncated: bool,
    #[serde(default)]
    pub next_continuation_token: Option<String>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ListedObject {
    pub key: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default, rename = "ETag")]
    pub etag: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteResult {
    #[serde(default)]
    pub deleted: Vec<DeletedKey>,
    #[serde(default, rename = "Error")]
    pub errors: Vec<DeleteError>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeletedKey {
    pub key: String,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteError {
    pub key: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// An S3 error response (`<Error><Code>…</Code><Message>…</Message></Error>`).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorResponse {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Serialize)]
#[serde(rename = "Delete")]
struct DeleteRequest<'a> {
    #[serde(rename = "Quiet")]
    quiet: bool,
    #[serde(rename = "Object")]
    objects: Vec<DeleteObject<'a>>,
}

#[derive(Serialize)]
struct DeleteObject<'a> {
    #[serde(rename = "Key")]
    key: &'a str,
}

/// The DeleteObjects body. Not quiet: the response then names every deleted key and every error.
pub fn delete_request(keys: &[String]) -> String {
    let body = DeleteRequest {
        quiet: false,
        objects: keys.iter().map(|k| DeleteObject { key: k }).collect(),
    };
    let xml = quick_xml::se::to_string(&body).expect("serializing a delete request cannot fail");
    format!(r#"<?xml version="1.0" encoding="UTF-8"?>{xml}"#)
}

pub fn parse_list(xml: &str) -> Result<ListBucketResult, String> {
    from_str(xml).map_err(|e| format!("unreadable ListObjectsV2 response: {e}"))
}

pub fn parse_delete(xml: &str) -> Result<DeleteResult, String> {
    from_str(xml).map_err(|e| format!("unreadable DeleteObjects response: {e}"))
}

pub fn parse_error(xml: &str) -> ErrorResponse {
    from_str(xml).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_truncated_listing() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>documents/s1/</Prefix>
<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>
<Contents><Key>documents/s1/a b+c=d(1).pdf</Key><Size>12</Size><ETag>"abc"</ETag></Contents>
<Contents><Key>documents/s1/ü&amp;x</Key><Size>3</Size></Contents>
<NextContinuationToken>tok/en+=</NextContinuationToken></ListBucketResult>"#;
        let r = parse_list(xml).unwrap();
        assert!(r.is_truncated);
        assert_eq!(r.next_continuation_token.as_deref(), Some("tok/en+="));
        assert_eq!(r.contents.len(), 2);
        assert_eq!(r.contents[1].key, "documents/s1/ü&x");
        assert_eq!(r.contents[0].etag.as_deref(), Some("\"abc\""));
    }

    #[test]
    fn reads_an_empty_listing() {
        let r = parse_list(r#"<ListBucketResult><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>"#).unwrap();
        assert!(r.contents.is_empty() && !r.is_truncated);
    }

    #[test]
    fn reads_per_key_delete_errors() {
        let xml = r#"<DeleteResult><Deleted><Key>a</Key></Deleted><Error><Key>b</Key><Code>AccessDenied</Code><Message>no</Message></Error></DeleteResult>"#;
        let r = parse_delete(xml).unwrap();
        assert_eq!(r.deleted.len(), 1);
        assert_eq!(r.errors[0].key, "b");
        assert_eq!(r.errors[0].code, "AccessDenied");
    }

    #[test]
    fn delete_request_escapes_keys() {
        let body = delete_request(&["a<b>&\"c".to_string(), "d".to_string()]);
        assert!(body.contains("<Quiet>false</Quiet>"));
        assert!(
            body.contains("<Key>a&lt;b&gt;&amp;\"c</Key>")
                || body.contains("<Key>a&lt;b&gt;&amp;&quot;c</Key>"),
            "{body}"
        );
        assert_eq!(body.matches("<Object>").count(), 2);
    }

    #[test]
    fn reads_error_bodies() {
        let e =
            parse_error("<Error><Code>SignatureDoesNotMatch</Code><Message>bad</Message></Error>");
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert_eq!(parse_error("not xml").code, "");
    }
}

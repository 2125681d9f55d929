//! Which responses are scanned: the policy's `files:` settings matched against a response's
//! method, status, media type, file extension (URL path or `Content-Disposition` file name),
//! `Content-Disposition: attachment` and size. One header check per response; no I/O.

use http::{HeaderMap, Method, StatusCode, header};

use crate::policy::FileSettings;

/// Whether the policy's `files:` settings select a response to `method path` with status
/// and headers.
pub fn select(
    s: &FileSettings,
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
) -> bool {
    if !s.scan || method != Method::GET || status != StatusCode::OK {
        return false;
    }
    if let Some(len) = content_length(headers)
        && (len < s.min_bytes || (s.max_bytes > 0 && len > s.max_bytes))
    {
        return false;
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !media.is_empty()
        && s.content_types.iter().any(|t| {
            if t.ends_with('/') {
                media.starts_with(t.as_str())
            } else {
                media == *t
            }
        })
    {
        return true;
    }
    let disposition = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if s.attachments
        && disposition
            .trim_start()
            .get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case("attachment"))
    {
        return true;
    }
    let name =
        disposition_filename(disposition).unwrap_or_else(|| path.rsplit('/').next().unwrap_or(""));
    match name.rsplit_once('.') {
        Some((_, ext)) if !ext.is_empty() => {
            let ext = ext.to_ascii_lowercase();
            s.extensions.contains(&ext)
        }
        _ => false,
    }
}

pub(super) fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The `filename=` of a `Content-Disposition` value (quoted or not; `filename*` not
/// decoded, its raw value is enough for the extension).
fn disposition_filename(v: &str) -> Option<&str> {
    v.split(';').find_map(|p| {
        let (k, val) = p.split_once('=')?;
        let k = k.trim();
        (k.eq_ignore_ascii_case("filename") || k.eq_ignore_ascii_case("filename*"))
            .then(|| val.trim().trim_matches('"'))
    })
}

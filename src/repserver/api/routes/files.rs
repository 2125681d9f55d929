//! File reputation: `GET /v1/files?sha256=H`, `POST /v1/files/lookup` (many hashes; a bad
//! one is an error for that item) and `POST /v1/files` (admin writes of file verdicts).

use http::StatusCode;

use super::super::jobs::publish;
use super::super::reply::{ApiError, check_batch, parse_json, query_param};
use super::super::{ApiConfig, Shared};
use super::count;
use crate::api::admin::Written;
use crate::api::files::{FileAnswer, FileItem, LookupAnswer, LookupRequest, WriteRequest};
use crate::clock::unix_secs;
use crate::model::{FileEntry, FileVerdict, Sha256Hex, Source};
use crate::repserver::metrics::{Answer, Kind};
use crate::repserver::store::Store;

/// `GET /v1/files?sha256=`: one file hash's answer, counted.
pub(super) async fn get_file(shared: &Shared, query: Option<&str>) -> Result<FileAnswer, ApiError> {
    let h = query_param(query, "sha256")?
        .ok_or_else(|| ApiError::bad_request("missing query parameter `sha256`"))?;
    let config = shared.config.clone();
    let answer = shared
        .read(move |store| file_answer(store, &config, &h))
        .await?;
    if let Ok(a) = &answer {
        count(shared, Kind::File, std::iter::once(answered_by(a)));
    }
    answer
}

/// One file-hash answer: the stored verdict, or `unknown`.
fn file_answer(store: &Store, config: &ApiConfig, input: &str) -> Result<FileAnswer, ApiError> {
    let h = Sha256Hex::parse(input)
        .ok_or_else(|| ApiError::bad_request("`sha256` is not 64 hex digits"))?;
    Ok(match store.lookup_file(&h)? {
        Some(f) => FileAnswer::of(&f, config.ttl_secs),
        None => FileAnswer::unknown(h.as_str(), config.untested_ttl_secs),
    })
}

/// What answered a file hash (for `/metrics`).
fn answered_by(a: &FileAnswer) -> Answer {
    if a.is_unknown() {
        Answer::Untested
    } else {
        Answer::Listed
    }
}

/// What answered a file lookup's item.
fn file_counted_as(item: &FileItem) -> Answer {
    match item {
        FileItem::Answer(a) => answered_by(a),
        FileItem::Refused { .. } => Answer::Error,
    }
}

/// `POST /v1/files/lookup`: one answer per hash, in order; a hash that is not 64 hex digits
/// is an error for that item.
pub(super) async fn lookup_files(shared: &Shared, body: &[u8]) -> Result<LookupAnswer, ApiError> {
    let req: LookupRequest = parse_json(body)?;
    check_batch(shared, req.sha256.len())?;
    let config = shared.config.clone();
    let answer = shared
        .read(move |store| -> Result<LookupAnswer, ApiError> {
            let mut files = Vec::with_capacity(req.sha256.len());
            for h in req.sha256 {
                files.push(match file_answer(store, &config, &h) {
                    Ok(a) => FileItem::Answer(a),
                    Err(e) if e.status == StatusCode::BAD_REQUEST => FileItem::Refused {
                        sha256: h,
                        error: e.message,
                    },
                    Err(e) => return Err(e),
                });
            }
            Ok(LookupAnswer { files })
        })
        .await??;
    count(shared, Kind::File, answer.files.iter().map(file_counted_as));
    Ok(answer)
}

/// `POST /v1/files` (admin): file verdicts, written in one transaction; a bad item refuses
/// the whole write.
pub(super) async fn write_files(shared: &Shared, body: &[u8]) -> Result<Written, ApiError> {
    let req: WriteRequest = parse_json(body)?;
    if req.upsert.is_empty() {
        return Err(ApiError::bad_request("nothing to write"));
    }
    check_batch(shared, req.upsert.len())?;
    let now = unix_secs();
    let mut files = Vec::with_capacity(req.upsert.len());
    for (i, f) in req.upsert.into_iter().enumerate() {
        let bad = |m: String| ApiError::bad_request(format!("upsert[{i}]: {m}"));
        files.push(FileEntry {
            sha256: Sha256Hex::parse(&f.sha256)
                .ok_or_else(|| bad("`sha256` is not 64 hex digits".into()))?,
            verdict: FileVerdict::parse(&f.verdict).ok_or_else(|| {
                bad(format!(
                    "verdict {:?}: one of clean, suspicious, malicious",
                    f.verdict
                ))
            })?,
            name: f.name,
            source: match f.source.as_deref() {
                None => Source::Manual,
                Some(s) => {
                    Source::from_stored(s).ok_or_else(|| bad(format!("bad source {s:?}")))?
                }
            },
            updated: now,
        });
    }
    let seq_tx = shared.seq_tx.clone();
    let seq = shared
        .call(move |store| -> Result<u64, ApiError> {
            let seq = store.upsert_files(&files)?;
            publish(&seq_tx, seq);
            Ok(seq)
        })
        .await??;
    Ok(Written { seq })
}

//! `POST /v1/import` (admin): a feed file, spooled to a temporary file (at most
//! [`ApiConfig::max_import_bytes`](crate::config::ApiConfig::max_import_bytes)), then
//! imported in one transaction on the store thread.

use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::super::Shared;
use super::super::jobs::publish;
use super::super::reply::{ApiError, query_param};
use crate::api::admin::ImportAnswer;
use crate::clock::unix_secs;
use crate::model::Score;
use crate::repserver::import::{self, ImportError, ImportOptions};

/// `POST /v1/import?format=F&feed=NAME[&category=C][&score=N]`: the body (a feed file) is
/// spooled to a temporary file (at most `max_import_bytes`), then imported in one
/// transaction on the store thread. Answers the import report.
pub(super) async fn import_feed(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<ImportAnswer, ApiError> {
    let q = req.uri().query();
    let format_name = query_param(q, "format")?.ok_or_else(|| {
        ApiError::bad_request(format!(
            "missing query parameter `format` ({})",
            import::Format::NAMES
        ))
    })?;
    let format = import::Format::from_name(&format_name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown format {format_name:?}; one of {}",
            import::Format::NAMES
        ))
    })?;
    let feed = query_param(q, "feed")?.unwrap_or_else(|| format.as_str().to_owned());
    if feed.is_empty()
        || feed.len() > 64
        || !feed.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    {
        return Err(ApiError::bad_request(
            "`feed` must be 1 to 64 visible characters without ':'",
        ));
    }
    let category = query_param(q, "category")?;
    let score = match query_param(q, "score")? {
        None => Score::ZERO,
        Some(s) => s
            .parse::<u8>()
            .ok()
            .and_then(Score::new)
            .ok_or_else(|| ApiError::bad_request(format!("`score` {s:?} is not 0..=100")))?,
    };
    let file_verdict = match query_param(q, "verdict")? {
        None => crate::model::FileVerdict::Malicious,
        Some(v) => crate::model::FileVerdict::parse(&v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`verdict` {v:?} is not clean, suspicious or malicious"
            ))
        })?,
    };
    let spool = spool_body(shared, req.into_body()).await?;
    let seq_tx = shared.seq_tx.clone();
    let report = shared
        .call(move |store| -> Result<import::ImportReport, ApiError> {
            let mut opts = ImportOptions::new(format, &feed, unix_secs());
            opts.score = score;
            opts.file_verdict = file_verdict;
            if let Some(c) = category {
                opts.category = Some(
                    store
                        .taxonomy()
                        .resolve(&c)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?,
                );
            }
            let file = spool.reopen().map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("spool: {e}"))
            })?;
            let report = import::import(store, std::io::BufReader::new(file), &opts).map_err(
                |e| match e {
                    ImportError::Store(e) => ApiError::from(e),
                    e => ApiError::bad_request(e.to_string()),
                },
            )?;
            publish(&seq_tx, report.seq);
            drop(spool);
            Ok(report)
        })
        .await??;
    tracing::info!(
        format = format.as_str(),
        imported = report.imported,
        bad = report.bad_total,
        seq = report.seq,
        "feed imported"
    );
    Ok(ImportAnswer::from(report))
}

/// Writes a request body to a new temporary file in the spool directory, at most
/// `max_import_bytes`. The file is deleted when the returned handle drops.
async fn spool_body(
    shared: &Shared,
    mut body: Incoming,
) -> Result<tempfile::NamedTempFile, ApiError> {
    use tokio::io::AsyncWriteExt as _;
    let internal = |what: &str, e: std::io::Error| {
        tracing::error!(error = %e, "import spool: {what}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("import spool: {what}: {e}"),
        )
    };
    let tmp = crate::repserver::upload::create(&shared.spool_dir)
        .map_err(|e| internal("cannot create a temporary file", e))?;
    let mut out = tokio::fs::File::from_std(
        tmp.reopen()
            .map_err(|e| internal("cannot open the temporary file", e))?,
    );
    let limit = shared.config.max_import_bytes;
    let mut written: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            written += data.len() as u64;
            if written > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("feed larger than {limit} bytes"),
                ));
            }
            out.write_all(&data)
                .await
                .map_err(|e| internal("cannot write", e))?;
        }
    }
    out.flush().await.map_err(|e| internal("cannot write", e))?;
    Ok(tmp)
}

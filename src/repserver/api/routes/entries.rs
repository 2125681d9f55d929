//! `POST /v1/entries` (admin): upserts and deletes of table entries in one transaction; a
//! bad item refuses the whole write.

use serde::Deserialize;

use super::super::Shared;
use super::super::jobs::publish;
use super::super::reply::{ApiError, check_batch, parse_json};
use crate::api::admin::Written;
use crate::clock::unix_secs;
use crate::model::{Key, Source};
use crate::repserver::import::JsonEntry;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteRequest {
    #[serde(default)]
    upsert: Vec<JsonEntry>,
    #[serde(default)]
    delete: Vec<String>,
}

/// `POST /v1/entries` (admin): `upsert` and `delete` in one transaction.
pub(super) async fn write_entries(shared: &Shared, body: &[u8]) -> Result<Written, ApiError> {
    let req: WriteRequest = parse_json(body)?;
    let n = req.upsert.len() + req.delete.len();
    if n == 0 {
        return Err(ApiError::bad_request("nothing to write"));
    }
    check_batch(shared, n)?;
    let seq_tx = shared.seq_tx.clone();
    let seq = shared
        .call(move |store| -> Result<u64, ApiError> {
            let now = unix_secs();
            let mut entries = Vec::with_capacity(req.upsert.len());
            for (i, j) in req.upsert.into_iter().enumerate() {
                entries.push(
                    j.into_entry(store.taxonomy(), Source::Manual, now)
                        .map_err(|e| ApiError::bad_request(format!("upsert[{i}]: {e}")))?,
                );
            }
            let mut keys = Vec::with_capacity(req.delete.len());
            for (i, k) in req.delete.iter().enumerate() {
                // Any stored key can be deleted, also one no write would accept now.
                keys.push(
                    Key::read(k).map_err(|e| ApiError::bad_request(format!("delete[{i}]: {e}")))?,
                );
            }
            let seq = store.write(|w| -> Result<u64, ApiError> {
                for e in &entries {
                    w.upsert(e)?;
                }
                for k in &keys {
                    w.delete(k)?;
                }
                Ok(w.seq())
            })?;
            publish(&seq_tx, seq);
            Ok(seq)
        })
        .await??;
    Ok(Written { seq })
}

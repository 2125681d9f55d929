//! Categories: `GET /v1/categories` (the built-in taxonomy and the admin-defined ones) and
//! `POST /v1/categories` (admin; built-in names are refused).

use serde::Deserialize;
use serde_json::{Value, json};

use super::super::Shared;
use super::super::reply::{ApiError, check_batch, parse_json};
use crate::repserver::store::Store;

pub(super) fn categories_json(store: &Store) -> Value {
    let builtin: Vec<Value> = crate::model::BUILTIN_CATEGORIES
        .iter()
        .map(|(name, class)| json!({ "name": name, "class": format!("{class:?}").to_ascii_lowercase() }))
        .collect();
    let custom: Vec<&str> = store.taxonomy().custom().map(|c| c.as_str()).collect();
    json!({ "builtin": builtin, "custom": custom })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryRequest {
    define: Vec<String>,
}

pub(super) async fn define_categories(shared: &Shared, body: &[u8]) -> Result<Value, ApiError> {
    let req: CategoryRequest = parse_json(body)?;
    check_batch(shared, req.define.len())?;
    let mut cats = Vec::with_capacity(req.define.len());
    for name in &req.define {
        cats.push(
            crate::model::Category::parse(name)
                .map_err(|e| ApiError::bad_request(format!("{name:?}: {e}")))?,
        );
    }
    shared
        .call(move |store| -> Result<Value, ApiError> {
            for c in cats {
                store.define_category(c)?;
            }
            Ok(categories_json(store))
        })
        .await?
}

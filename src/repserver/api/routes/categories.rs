//! Categories: `GET /v1/categories` (the built-in taxonomy and the admin-defined ones) and
//! `POST /v1/categories` (admin; built-in names are refused).

use super::super::Shared;
use super::super::reply::{ApiError, check_batch, parse_json};
use crate::api::admin::{Categories, DefineCategories};
use crate::repserver::store::Store;

/// The built-in categories and the store's admin-defined ones.
pub(super) fn categories(store: &Store) -> Categories {
    Categories::with_custom(
        store
            .taxonomy()
            .custom()
            .map(|c| c.as_str().to_owned())
            .collect(),
    )
}

/// `POST /v1/categories` (admin): defines categories, then answers them all.
pub(super) async fn define_categories(
    shared: &Shared,
    body: &[u8],
) -> Result<Categories, ApiError> {
    let req: DefineCategories = parse_json(body)?;
    check_batch(shared, req.define.len())?;
    let mut cats = Vec::with_capacity(req.define.len());
    for name in &req.define {
        cats.push(
            crate::model::Category::parse(name)
                .map_err(|e| ApiError::bad_request(format!("{name:?}: {e}")))?,
        );
    }
    shared
        .call(move |store| -> Result<Categories, ApiError> {
            for c in cats {
                store.define_category(c)?;
            }
            Ok(categories(store))
        })
        .await?
}

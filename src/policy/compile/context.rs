//! The compile context: where errors go and which rule is being compiled, and the names of
//! categories (`categories.custom`, and any category a setting names) resolved against the
//! policy's taxonomy. The other files add the methods that compile their sections.

use std::sync::Arc;

use crate::model::{Category, Taxonomy};
use crate::policy::PolicyError;
use crate::policy::schema::RawCategories;
use crate::yaml::Located;

/// Compilation context: where errors go and which rule is being compiled.
pub(super) struct Cx<'o> {
    pub(super) origin: &'o str,
    pub(super) rule: Option<String>,
    pub(super) errors: Vec<PolicyError>,
}

impl Cx<'_> {
    pub(super) fn error(&mut self, line: u32, column: u32, message: String) {
        self.errors.push(PolicyError {
            origin: self.origin.to_owned(),
            line,
            column,
            rule_id: self.rule.clone(),
            message,
        });
    }

    pub(super) fn error_at<T>(&mut self, at: &Located<T>, message: String) {
        self.error(at.line, at.column, message);
    }

    pub(super) fn taxonomy(&mut self, categories: Option<&RawCategories>) -> Taxonomy {
        let mut t = Taxonomy::default();
        for name in categories
            .and_then(|c| c.custom.as_deref())
            .unwrap_or_default()
        {
            match Category::parse(&name.value) {
                Ok(c) => {
                    if let Err(e) = t.define(c) {
                        self.error_at(name, format!("categories.custom: {e}"));
                    }
                }
                Err(e) => self.error_at(name, format!("categories.custom: {e}")),
            }
        }
        t
    }

    pub(super) fn category(
        &mut self,
        taxonomy: &Taxonomy,
        name: &Located<String>,
        key: &str,
    ) -> Option<Category> {
        match taxonomy.resolve(&name.value) {
            Ok(c) => Some(c),
            Err(e) => {
                self.error_at(
                    name,
                    format!("{key}: {e} (not built in; define it under categories.custom)"),
                );
                None
            }
        }
    }

    pub(super) fn categories(
        &mut self,
        taxonomy: &Taxonomy,
        names: &[Located<String>],
        key: &str,
    ) -> Arc<[Category]> {
        let v: Vec<Category> = names
            .iter()
            .filter_map(|n| self.category(taxonomy, n, key))
            .collect();
        v.into()
    }
}

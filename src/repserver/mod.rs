//! The reputation server (issue 4): placeholder docs, completed below.

pub mod import;
pub mod model;
pub mod store;

//! The reputation server (issue 4): placeholder docs, completed below.

pub mod model;
pub mod store;

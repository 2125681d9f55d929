//! webrep: a forward web proxy that filters traffic by URL reputation.
//!
//! See `README.md` for running it and `../shared/DESIGN.md` for the architecture.

pub mod canon;

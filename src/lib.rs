//! webrep: a forward web proxy that filters traffic by URL reputation.
//!
//! See `README.md` for running it and `../shared/DESIGN.md` for the architecture.

pub mod accesslog;
pub mod api;
pub mod app;
pub mod canon;
pub mod cli;
pub mod client;
pub mod config;
pub mod conns;
pub mod feedback;
pub mod fsread;
pub mod intercept;
pub mod metrics;
pub mod model;
pub mod output;
pub mod policy;
pub mod proxy;
pub mod repserver;
pub mod reputation;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;

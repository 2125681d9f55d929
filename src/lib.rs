//! webrep: a forward web proxy that filters traffic by URL reputation, and the reputation
//! server that feeds it. `README.md` says how to run both; `docs/` holds the references.
//!
//! # The parts, by layer
//!
//! Imports point down, never up; `tests/it/layers.rs` checks it on every test run (a module
//! gets a layer there before it can exist, and a wrong edge fails the suite).
//!
//! - Helpers with no domain: [`fsread`] (bounded reads of configured files), [`conns`]
//!   (connection limits, shared by both listeners), [`shutdown`], [`output`] (printing that
//!   never panics), [`yaml`] (parsing with positions), [`clock`] (unix time), [`urlenc`]
//!   (query and form encoding), [`exit`] (the process exit statuses), [`syslog`] (RFC 5424 messages over a datagram socket); then [`secrets`] (permission checks of key and token files,
//!   the token-file reader, token comparison), [`metrics`] (Prometheus helpers) and [`tls`]
//!   (the rustls provider and the verifying client configuration).
//! - The pure core, no I/O and no clock: [`canon`] (URL canonicalization and lookup
//!   expressions) <- [`model`] (scores, risk bands, categories, keys, entries, verdicts and
//!   the combination rule) <- [`policy`] (the admin's YAML policy, compiled and evaluated).
//! - The wire protocol: [`api`] (typed requests and answers of the reputation API, feedback
//!   events, the change stream), used by both ends; [`client`], the API's HTTP client.
//! - [`config`]: the validated configuration, read by everything that runs.
//! - Runtime services: [`telemetry`] (diagnostic logging), [`policyfile`] (loading and
//!   hot-reloading the policy), [`accesslog`], [`intercept`] (the local CA and minted
//!   certificates).
//! - The two sides, which never import each other: the proxy side, [`reputation`] (cached
//!   answers from the configured servers) <- [`feedback`] (events to the server) <-
//!   [`proxy`]; and the server side, [`repserver`] (store, import, API, and the tiers above
//!   it: mirrored by delta sync, asked on a miss, sent the feedback events it stores).
//! - The composition roots, the only places that see both sides: [`cli`] (the command
//!   line), [`app`] (builds and runs the proxy and the server with their background tasks,
//!   one signal fan-out and one shutdown sequence; the commands that use a server) and the
//!   binary's `main`.
//!
//! # A request's path through the proxy
//!
//! A connection is accepted on a worker ([`proxy`]), admitted by the connection limits,
//! and served HTTP/1.1 (or, inside an intercepted tunnel, HTTP/2). Each request goes through
//! named phases ([`proxy::forward`], [`proxy::connect`]): the target is checked, the proxy's
//! own pages are answered, the filter decides (canonicalization, the policy's lists, the
//! cached reputation answer, the policy's rules: a decision with no side effects), the
//! decision is recorded once (counters, a feedback event, a ticket), and then the request
//! is refused with a block or warn page, forwarded upstream through the pooled clients, or
//! tunnelled (relayed, or intercepted with a minted certificate). Downloads the policy
//! selects are hashed on the way back and checked against file reputation.

pub mod accesslog;
pub mod api;
pub mod app;
pub mod canon;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod conns;
pub mod exit;
pub mod feedback;
pub mod fsread;
pub mod intercept;
pub mod metrics;
pub mod model;
pub mod output;
pub mod policy;
pub mod policyfile;
pub mod proxy;
pub mod repserver;
pub mod reputation;
pub mod secrets;
pub mod shutdown;
pub mod syslog;
pub mod telemetry;
pub mod tls;
pub mod urlenc;
pub mod yaml;

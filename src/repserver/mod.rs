//! The reputation server (issue 4): the reputation model, its durable table, feed import and
//! the HTTP API over them, and the commands that run and use it.
//!
//! # What it does
//! - [`model`] (pure, no I/O, no clock): scores 0..=100 and their risk bands (Dangerous 0-50,
//!   Highly Suspicious 51-65, Suspicious 66-80, Safe 81-100; Untested is a level of its own),
//!   the built-in category taxonomy plus admin-defined categories, table keys (Safe Browsing
//!   style expressions `host/`, `host/path/`, `host/path?query`, always built through
//!   [`crate::canon`]), entries, and the combination rule of DESIGN.md §3: a URL matches
//!   every entry keyed by one of its lookup expressions, the worst score wins, categories
//!   come from the most specific match (longest host, then longest path).
//! - [`store`]: the table in SQLite (rusqlite, bundled): entries keyed by expression and
//!   indexed by host, a file-hash table (SHA-256 -> verdict, name, source), admin-defined
//!   categories, and a change log. Every write is one transaction that bumps a sequence
//!   number once; [`store::Store::changes_since`] tells a follower which keys changed.
//! - [`import`]: streaming parsers for URLhaus CSV, UT1/Shallalist domain lists, hosts files
//!   and webrep JSON-lines, writing a whole file in one transaction.
//! - [`api`]: the HTTP/1.1 JSON API (DESIGN.md §4) as a library function,
//!   [`api::serve_with`]: bearer-token auth (client / admin), single and batch lookups with
//!   TTLs and an explain form, per-host answers with bounded path entries, admin batch
//!   writes, feed imports, file hashes and categories, a change stream as long-poll and as
//!   server-sent events, optional TLS, and `/healthz`. `docs/repserver.md` is its reference.
//! - [`upstream`]: the global tier, another server asked about items with no local entry,
//!   its answers cached for their TTL; [`client`]: the API client it (and the CLI) use.
//! - [`server`]: `webrep server` (config, tokens, store, TLS, upstream, sample data);
//!   [`commands`]: `webrep import` and `webrep lookup`.
//!
//! # Where it sits
//! `webrep server` ([`server::run`]) owns one [`store::Store`] behind [`api::serve_with`]: a
//! writer thread runs writes and imports in order, reader threads with read-only connections
//! answer lookups and change queries. Proxies never open the store; they talk to the server
//! (issue 6). The model and store take the time as a parameter (`now`, unix seconds) so expiry
//! is testable; only the API reads the clock.
//!
//! # What it costs
//! A URL lookup is at most [`crate::canon::MAX_EXPRESSIONS`] (30) primary-key probes through
//! cached prepared statements, plus one canonicalization per matching row decoded (keys are
//! re-validated when read back). A host answer adds one query on the host index for the host
//! and its (at most four) parent domains, bounded by the caller's path limit. Imports read one
//! line at a time (each at most [`import::ImportOptions::max_line_bytes`], default 64 KiB) and
//! keep at most [`import::ImportOptions::max_bad_lines`] bad-line reports; SQLite holds the
//! uncommitted import in its WAL file on disk, not in memory. The change log grows by one row
//! per key written and is pruned to `server.change_log_rows` every minute.
//!
//! # How it fails
//! Nothing here panics on bad input. Keys that are not URLs, scores above 100, unknown or
//! malformed categories are refused with typed errors ([`model::KeyError`],
//! [`model::CategoryError`], [`store::StoreError`]). A failed batch or import rolls back whole:
//! readers (other connections; the WAL lets them read during a write) see all of it or none,
//! and a crash mid-import leaves the previous table. A bad feed line is reported with its
//! line number and skipped; a file with no valid line is refused as the wrong format and
//! writes nothing. A store file written by a newer schema is refused at open; a damaged row is
//! a [`store::StoreError::Corrupt`] for the lookup that reads it.
//!
//! # Not built
//! - Concurrent upstream misses on one key from different requests are not coalesced (the
//!   cache makes them rare); the upstream's change stream is not followed (TTL only).
//! - The API has no per-client rate limit beyond `max_connections` and the job queue bound.

pub mod api;
pub mod client;
pub mod commands;
pub mod import;
pub mod model;
pub mod server;
pub mod store;
pub mod upstream;

//! The reputation server (issue 4): the reputation model, its durable table, feed import and
//! the HTTP API over them. No CLI yet.
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
//!   [`api::serve`]: bearer-token auth (client / admin), single and batch lookups with TTLs
//!   and an explain form, per-host answers with bounded path entries, admin batch writes, a
//!   long-poll change stream woken by a watch of the sequence, and `/healthz`.
//!
//! # Where it sits
//! Behind [`api::serve`], which owns one [`store::Store`] on a dedicated thread, answers
//! per-host and per-URL lookups from it and feeds admin writes into it (the `webrep server`
//! subcommand that starts it is not wired yet). The proxy never opens the store; it talks to
//! the server. The model and store take the time as a parameter (`now`, unix seconds) so
//! expiry is testable; only the API reads the clock.
//!
//! # What it costs
//! A URL lookup is at most [`crate::canon::MAX_EXPRESSIONS`] (30) primary-key probes through
//! cached prepared statements, plus one canonicalization per matching row decoded (keys are
//! re-validated when read back). A host answer adds one query on the host index for the host
//! and its (at most four) parent domains, bounded by the caller's path limit. Imports read one
//! line at a time (each at most [`import::ImportOptions::max_line_bytes`], default 64 KiB) and
//! keep at most [`import::ImportOptions::max_bad_lines`] bad-line reports; SQLite holds the
//! uncommitted import in its WAL file on disk, not in memory. The change log grows by one
//! row per key written and is never pruned yet. No figures measured yet (the 1,000,000-entry
//! bench of issue 4 is not written).
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
//! # Not yet built
//! - TLS on the API, SSE for the change stream (long-poll only), change-log pruning;
//! - API endpoints for file-hash lookups and writes, admin-defined categories and feed
//!   imports (the store and [`import`] have them; the API does not expose them yet);
//! - the upstream tier (asking another server about keys without an entry, with caching);
//! - the CLI (`webrep server`, `webrep import`, `webrep lookup`), configuration section and
//!   shipped sample data;
//! - the 1,000,000-entry throughput / RSS bench.

pub mod api;
pub mod client;
pub mod commands;
pub mod import;
pub mod model;
pub mod server;
pub mod store;
pub mod upstream;

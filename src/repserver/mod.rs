//! The reputation server: its durable table over the reputation model ([`crate::model`]),
//! feed import and the HTTP API over them. The commands that use a server
//! (`webrep import`, `lookup`, `feedback`) live in [`crate::app::commands`].
//!
//! # What it does
//! - [`crate::model`] (pure, no I/O, no clock): scores 0..=100 and their risk bands (Dangerous 0-50,
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
//! - [`mirror`] and [`follow`]: the tier above kept in step by delta sync: its table copied
//!   once in snapshot pages into a mirror beside the server's own table, then its change log
//!   followed by cursor; both ends of the sync API (`GET /v1/sync/...`) over the store.
//! - [`upstream`]: asking the tier above about items no `host/` entry of either table decides,
//!   its answers cached for their TTL and combined with the local ones (the upstream's host
//!   verdict, both tiers' path entries, a local entry winning for its key), through the API
//!   client [`crate::client`].
//! - [`forward`]: feedback flows up: the stored events sent on to the upstream tier, each
//!   once, through outages, anonymized by default (`server.upstream.feedback`).
//! - [`metrics`]: the server's Prometheus counters, on `server.metrics_listen`.
//! - [`upload`]: the locked temporary files import uploads are spooled to, and the removal
//!   of those a killed server left.
//! - [`server`]: `webrep server` (config, tokens, store, TLS, upstream, sample data).
//!
//! # Where it sits
//! `webrep server` ([`server::run`]) owns one [`store::Store`] behind [`api::serve_with`]: a
//! writer thread runs writes and imports in order, reader threads with read-only connections
//! answer lookups and change queries. Proxies never open the store; they talk to the server
//! through [`crate::client`]. The model and store take the time as a parameter (`now`, unix
//! seconds) so expiry is testable; only the API reads the clock.
//!
//! # What it costs
//! A URL lookup is one statement probing the primary key with the URL's expressions (at most
//! [`crate::canon::MAX_EXPRESSIONS`], 30), plus one canonicalization per matching row decoded
//! (keys are re-validated when read back). A host answer is one primary-key range scan per
//! host and parent domain (at most five): the `host/` row, then path rows in key order until
//! the caller's path limit; a batch of hosts runs in one read transaction. Each connection
//! keeps up to 64 MiB of SQLite page cache. Imports read one line at a time (each at most
//! [`import::ImportOptions::max_line_bytes`], default 64 KiB) and keep at most
//! [`import::ImportOptions::max_bad_lines`] bad-line reports; SQLite holds the uncommitted
//! import in its WAL file on disk, not in memory. The change log grows by one row per key
//! written and is pruned to `server.change_log_rows` every minute.
//!
//! `cargo bench --bench repserver` measures imports, lookups and memory on a 1,000,000-entry
//! table (`docs/performance.md`, "Reputation server store").
//!
//! # How it fails
//! Nothing here panics on bad input. Keys that are not URLs, scores above 100, unknown or
//! malformed categories are refused with typed errors ([`crate::model::KeyError`],
//! [`crate::model::CategoryError`], [`store::StoreError`]). A failed batch or import rolls
//! back whole: readers (other connections; the WAL lets them read during a write) see all of it or none,
//! and a crash mid-import leaves the previous table. A bad feed line is reported with its
//! line number and skipped; a file with no valid line is refused as the wrong format and
//! writes nothing. A store file written by a newer schema is refused at open; a damaged row is
//! a [`store::StoreError::Corrupt`] for the lookup that reads it.
//!
//! # Not built
//! - Concurrent upstream misses on one key from different requests are not coalesced (the
//!   cache makes them rare).
//! - Sync pages are JSON without compression; a subscription is filtered by the upstream
//!   (it sends what is subscribed, and the rest of a changed key as `deleted`).
//! - The API has no per-client rate limit beyond the connection limits (`max_connections`,
//!   `max_connections_per_client`) and the job queue bound.

pub mod api;
pub mod events;
pub mod follow;
pub mod forward;
pub mod import;
pub mod metrics;
pub mod mirror;
pub mod server;
pub mod store;
pub mod upload;
pub mod upstream;

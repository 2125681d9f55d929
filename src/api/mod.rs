//! The wire protocol between proxies, tiers of reputation servers and the command line: the
//! types both ends serialize and parse, defined once so that a renamed field is a compile
//! error on both sides, not a runtime "bad answer". Pure data and validation: no I/O.
//!
//! - [`events`]: feedback events (`POST /v1/events`) and the server's per-event answer;
//!   [`feedback`]: what admins read and do about them (stored events, escalations).
//! - [`lookup`]: URL and host lookups, single and batch.
//! - [`changes`]: the change stream's answer and keys.
//! - [`files`]: file reputation, lookups and writes.
//! - [`admin`]: errors, health, writes, imports and categories.
//! - [`sync`]: delta sync between tiers of servers (snapshot pages and changed values).

pub mod admin;
pub mod changes;
pub mod events;
pub mod feedback;
pub mod files;
pub mod lookup;
pub mod sync;

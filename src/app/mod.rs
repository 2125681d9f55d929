//! The composition root: the only part of the crate that sees both the proxy side and the
//! reputation server. It holds the command-line commands that talk to a server or open a
//! store (`webrep import`, `lookup`, `feedback`); the binary's `main` dispatches to them.
//! Nothing below imports it.

pub mod commands;

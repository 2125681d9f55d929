//! HTTPS interception (issue 7): the local CA ([`ca`]) and per-host leaf certificates
//! ([`mint`]). The CONNECT flow that uses them (peek the ClientHello, intercept or tunnel by
//! policy, serve the inner requests through the same filtering as plain HTTP) is built on top
//! of these in the proxy.
//!
//! Nothing here touches the network. The CA key never leaves [`ca::Ca`]; leaves get their own
//! keys.

pub mod ca;
pub mod mint;

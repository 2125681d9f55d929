//! HTTPS interception: the local CA ([`ca`]) and per-host leaf certificates
//! ([`mint`]). The CONNECT flow that uses them (classify the first bytes, decrypt, serve the
//! inner requests through the proxy's own service) is [`crate::proxy::intercept`];
//! `docs/intercept.md` describes the whole.
//!
//! Nothing here touches the network. The CA key never leaves [`ca::Ca`]; leaves get their own
//! keys.

pub mod ca;
pub mod mint;

//! The validated `admin:` section: the admin listener (`/metrics`, `/stats`, the admin API)
//! and the file holding the admin API's token.
//!
//! Read by the proxy when it binds. Fails on a listen address that is not `ip:port`; the
//! token file is read (and checked) by the proxy, at start and on reload.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::check::{InvalidValue, opt_socket_addr};
use super::raw::RawAdminConfig;

/// Validated `admin:` section.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
}

impl TryFrom<RawAdminConfig> for AdminConfig {
    type Error = InvalidValue;

    fn try_from(a: RawAdminConfig) -> Result<Self, InvalidValue> {
        Ok(AdminConfig {
            listen: opt_socket_addr("admin.listen", a.listen.as_deref())?,
            token_file: a.token_file,
        })
    }
}

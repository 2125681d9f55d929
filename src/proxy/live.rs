//! A reloaded config's live settings, applied to the running proxy.
//!
//! Where it sits: the composition root's reload (SIGHUP) validates the new config file whole
//! and calls [`ProxyState::apply_live`]; the file reads that follow ([`ProxyState::reload`])
//! then use the new paths. Which settings are live is [`crate::config::live::PROXY_LIVE`];
//! everything else keeps the value the proxy started with. Requests in flight finish with
//! the settings they read; the next reads see the new ones. Cost: a few atomic pointer
//! swaps; nothing fails here (the files named are read, and may fail, in the reload).

use std::sync::Arc;

use crate::config::{AuthConfig, Config};

use super::ProxyState;

impl ProxyState {
    /// Swaps in the live settings of `new` (see the module docs).
    pub fn apply_live(&self, new: &Config) {
        let running = self.config.load_full();
        self.config.store(Arc::new(running.with_live(&new.proxy)));
        let auth = self.auth_config.load_full();
        // Authentication is built at start: its users file changes only while it stays on.
        let users_file = match (&auth.users_file, &new.auth.users_file) {
            (Some(_), Some(path)) => Some(path.clone()),
            _ => auth.users_file.clone(),
        };
        self.auth_config.store(Arc::new(AuthConfig {
            users_file,
            groups_file: new.auth.groups_file.clone(),
            ..(*auth).clone()
        }));
        self.admin_token_file
            .store(new.admin.token_file.clone().map(Arc::new));
        if let (Some(f), Some(file)) = (&self.filter, new.policy.file()) {
            f.policy.set_path(file);
        }
    }
}

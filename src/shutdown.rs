//! Process signals: SIGTERM or SIGINT cancels the root token (the proxy stops accepting and
//! drains for its grace period); a second one exits at once with status 1. SIGHUP is caught
//! here so that an admin's `systemctl reload` or `kill -HUP` never kills the process; the
//! policy handle has its own SIGHUP listener that reloads the policy (see
//! `crate::policy::PolicyHandle::spawn_sighup`).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Spawns the signal task; returns the token it cancels.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received");
        }
    });
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        t.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(1);
    });
    Ok(token)
}

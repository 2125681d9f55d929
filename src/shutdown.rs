//! Process signals: SIGTERM or SIGINT cancels the root token (the proxy stops accepting and
//! drains for its grace period); a second one exits at once with status 1. SIGHUP is caught
//! here so that an admin's `systemctl reload` or `kill -HUP` never kills the process; the
//! proxy has its own SIGHUP listener that reloads the policy, users and groups files
//! (`crate::proxy::ProxyState::reload`).
//!
//! It also tells systemd where the process stands (`Type=notify` units, `sd_notify(3)`):
//! [`notify_ready`] once every listener is bound, [`notify_reloading`] and
//! [`notify_ready`] around a policy reload, `STOPPING=1` when the first signal arrives.
//! Without `NOTIFY_SOCKET` in the environment (not under systemd) these do nothing; a failure
//! to send is logged and otherwise ignored, since the service itself works either way.

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
        notify(&[sd_notify::NotifyState::Stopping]);
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

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// `READY=1` with a status line (shown by `systemctl status`): the service accepts
/// connections.
pub fn notify_ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// `RELOADING=1` with the monotonic time, as systemd asks: a reload has started; call
/// [`notify_ready`] when it is over, whether it succeeded or not.
pub fn notify_reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

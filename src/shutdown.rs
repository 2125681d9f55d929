//! Process signals, background tasks and systemd notifications: the plumbing of one
//! shutdown sequence.
//!
//! [`Signals::install`] catches the signals once for the whole process: SIGTERM or SIGINT
//! cancels the shutdown token (the proxy stops accepting and drains for its grace period); a
//! second one exits at once with status 1. Each SIGHUP is fanned out to every [`Reloads`]
//! subscriber (the proxy's reload of its policy, users, groups and token files; the server's
//! reload of its config, tokens and escalation rules), so an admin's `systemctl reload` or
//! `kill -HUP` never kills the process and no part installs a signal handler of its own. Each
//! SIGUSR1 is fanned out the same way to [`Signals::reopens`] subscribers (the proxy reopens
//! its access log after a rotation).
//!
//! [`Tasks`] holds a process's background tasks (file watchers, the change-stream follower,
//! the admin listener, reload loops): each runs in a span named after it, and
//! [`Tasks::stop`] cancels them all and waits a bounded time, as the last step of shutdown.
//!
//! It also tells systemd where the process stands (`Type=notify` units, `sd_notify(3)`):
//! [`notify_ready`] once every listener is bound, [`notify_reloading`] and
//! [`notify_ready`] around a reload, `STOPPING=1` when the first signal arrives.
//! Without `NOTIFY_SOCKET` in the environment (not under systemd) these do nothing; a failure
//! to send is logged and otherwise ignored, since the service itself works either way.
//!
//! # Nothing outlives the drain
//! Reloads (SIGHUP, the admin API's `POST /v1/reload`, a policy file change) read files on
//! the blocking pool, and DNS lookups run there too. Shutdown never waits for them: the
//! tasks that await them end when their token is cancelled, and the runtimes are
//! shut down with [`BLOCKING_TASKS_GRACE`], after which the process exits without whatever
//! blocking work is still running. The signal task keeps running until then, so a second
//! signal still exits at once.
//!
//! # Watchdog
//! With `WatchdogSec=` in the unit (systemd then sets `WATCHDOG_USEC`), [`Watchdog::start`]
//! gives each event loop (a proxy worker, the reputation server's runtime) a heartbeat task
//! that stamps the time every quarter period, and a plain thread that sends `WATCHDOG=1`
//! every half period only while every loop has stamped within the last half period. A
//! wedged event loop (a blocking call, a busy loop, a deadlock) therefore stops the pings,
//! and systemd kills and restarts the service after `WatchdogSec`. Cost: one timer wake-up
//! per loop per quarter period; nothing on the request path.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// How long blocking tasks still running once the proxy or server has drained (a reload
/// reading a file, a DNS lookup) may take before the process exits without them.
pub const BLOCKING_TASKS_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The process's signal handlers, installed once (see the module docs).
#[derive(Debug)]
pub struct Signals {
    shutdown: CancellationToken,
    hangups: tokio::sync::watch::Receiver<u64>,
    usr1s: tokio::sync::watch::Receiver<u64>,
}

impl Signals {
    /// Installs the handlers for SIGTERM, SIGINT, SIGHUP and SIGUSR1 and spawns the task that
    /// watches them. It runs until the runtime stops, so that a second signal during the
    /// drain still exits at once.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn install() -> std::io::Result<Self> {
        let token = CancellationToken::new();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let (hangup_tx, hangups) = tokio::sync::watch::channel(0u64);
        let (usr1_tx, usr1s) = tokio::sync::watch::channel(0u64);
        let t = token.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    Some(()) = hup.recv() => {
                        tracing::info!("SIGHUP received");
                        hangup_tx.send_modify(|n| *n += 1);
                        continue;
                    }
                    Some(()) = usr1.recv() => {
                        tracing::info!("SIGUSR1 received");
                        usr1_tx.send_modify(|n| *n += 1);
                        continue;
                    }
                }
                if t.is_cancelled() {
                    tracing::warn!("second signal: exiting without draining");
                    std::process::exit(1);
                }
                notify(&[sd_notify::NotifyState::Stopping]);
                t.cancel();
            }
        });
        Ok(Self {
            shutdown: token,
            hangups,
            usr1s,
        })
    }

    /// The token SIGTERM and SIGINT cancel.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// A subscription to SIGHUP, from now on.
    pub fn reloads(&self) -> Reloads {
        let mut rx = self.hangups.clone();
        rx.mark_unchanged();
        Reloads(Some(rx))
    }

    /// A subscription to SIGUSR1 (reopen the log files), from now on.
    pub fn reopens(&self) -> Reloads {
        let mut rx = self.usr1s.clone();
        rx.mark_unchanged();
        Reloads(Some(rx))
    }
}

/// One subscriber's view of SIGHUP (or of SIGUSR1, from [`Signals::reopens`]):
/// [`Reloads::next`] returns once per signal (signals that arrive while the subscriber is
/// busy fold into one more).
#[derive(Debug)]
pub struct Reloads(Option<tokio::sync::watch::Receiver<u64>>);

impl Reloads {
    /// A subscription that never fires: for a proxy or server run inside another program
    /// (tests, benchmarks) that must not react to the process's signals.
    pub fn none() -> Self {
        Self(None)
    }

    /// Waits for the next signal; `false` once none can come any more.
    pub async fn next(&mut self) -> bool {
        match &mut self.0 {
            Some(rx) => rx.changed().await.is_ok(),
            None => std::future::pending().await,
        }
    }
}

/// A process's background tasks, each in a span named after it, stopped together as the
/// last step of shutdown.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: tokio_util::task::TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// The token a background task watches: cancelled by [`Tasks::stop`].
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` on the current runtime, in a span `task` with its `name`.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        use tracing::Instrument as _;
        self.tracker
            .spawn(task.instrument(tracing::info_span!("task", name)));
    }

    /// Cancels every task's token and waits for them to end, at most `grace`; a task still
    /// running then is left to the runtime's shutdown, and the log says how many there were.
    pub async fn stop(&self, grace: std::time::Duration) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tracker.len(),
                "background tasks did not stop in time"
            );
        }
    }
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

/// Heartbeats of the event loops the systemd watchdog vouches for (see the module docs).
#[derive(Debug)]
pub struct Watchdog {
    period: std::time::Duration,
    start: std::time::Instant,
    /// Per loop: when it last ran its heartbeat, in ms since `start`.
    beats: Vec<std::sync::atomic::AtomicU64>,
}

impl Watchdog {
    /// Under a unit with `WatchdogSec=`: the heartbeats of `loops` event loops and the thread
    /// that pings systemd while all of them beat. `None` without a watchdog.
    pub fn start(loops: usize) -> Option<std::sync::Arc<Watchdog>> {
        let period = sd_notify::watchdog_enabled()?;
        let w = std::sync::Arc::new(Self::new(period, loops));
        let pinger = w.clone();
        let spawned = std::thread::Builder::new()
            .name("webrep-watchdog".into())
            .spawn(move || pinger.ping_forever());
        match spawned {
            Ok(_) => {
                tracing::info!(
                    period_ms = period.as_millis() as u64,
                    loops,
                    "systemd watchdog on"
                );
                Some(w)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the watchdog thread; systemd will restart us");
                None
            }
        }
    }

    fn new(period: std::time::Duration, loops: usize) -> Self {
        Self {
            period,
            start: std::time::Instant::now(),
            beats: (0..loops)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Stamps loop `i` as alive.
    fn beat(&self, i: usize) {
        if let Some(b) = self.beats.get(i) {
            b.store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The heartbeat task of event loop `i`: spawn it on that loop's runtime. It runs until
    /// the runtime shuts down.
    pub async fn heartbeat(self: std::sync::Arc<Self>, i: usize) {
        let mut tick = tokio::time::interval(self.period / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.beat(i);
        }
    }

    /// The first loop that has not beaten within half a period of `now_ms`, if any.
    fn stale_loop(&self, now_ms: u64) -> Option<usize> {
        let limit = u64::try_from((self.period / 2).as_millis()).unwrap_or(u64::MAX);
        self.beats.iter().position(|b| {
            now_ms.saturating_sub(b.load(std::sync::atomic::Ordering::Relaxed)) > limit
        })
    }

    fn ping_forever(&self) {
        let mut complained = false;
        loop {
            std::thread::sleep(self.period / 2);
            match self.stale_loop(self.now_ms()) {
                None => {
                    complained = false;
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
                Some(i) if !complained => {
                    complained = true;
                    tracing::error!(
                        event_loop = i,
                        "an event loop has stopped running tasks: not pinging the systemd watchdog"
                    );
                }
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn background_tasks_stop_together_and_a_stuck_one_does_not_hold_up_shutdown() {
        let tasks = Tasks::new();
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (token, flag) = (tasks.stopping(), stopped.clone());
        tasks.spawn("waits for stop", async move {
            token.cancelled().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        tasks.spawn("never ends", std::future::pending());
        tasks.stop(Duration::from_millis(100)).await;
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
        assert!(tasks.stopping().is_cancelled());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_subscriber_hears_each_sighup() {
        let signals = Signals::install().unwrap();
        let (mut a, mut b) = (signals.reloads(), signals.reloads());
        let mut quiet = Reloads::none();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let wait = Duration::from_secs(20);
        assert!(tokio::time::timeout(wait, a.next()).await.unwrap());
        assert!(tokio::time::timeout(wait, b.next()).await.unwrap());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), quiet.next())
                .await
                .is_err()
        );
        assert!(!signals.shutdown().is_cancelled());
    }

    #[test]
    fn the_watchdog_vouches_only_while_every_loop_beats() {
        let w = Watchdog::new(Duration::from_millis(1000), 3);
        // At start every loop counts as having beaten at 0.
        assert_eq!(w.stale_loop(400), None);
        assert_eq!(w.stale_loop(600), Some(0));
        for (i, at) in [(0, 700), (1, 800), (2, 300)] {
            w.beats[i].store(at, std::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(w.stale_loop(900), Some(2), "loop 2 last beat 600 ms ago");
        w.beats[2].store(900, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(w.stale_loop(1100), None);
        w.beat(7); // not a loop: ignored
    }
}

//! The real `webrep` binary as a child process: one way to spawn it, read what it logs, wait
//! for a line, signal it and see it exit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{BOUND, eventually_ok};

/// The `webrep` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_webrep");

/// Where the tests' `webrep` looks for its default configuration file: a directory that does
/// not exist, so that a `/etc/webrep/webrep.yaml` installed on the machine (the Debian
/// package) never changes what a test runs.
pub(crate) const NO_DEFAULT_CONFIG_DIR: &str =
    concat!(env!("CARGO_TARGET_TMPDIR"), "/no-default-config");

/// `webrep args...` as the tests run it: no colours, no `RUST_LOG` or `WEBREP_CONFIG` from
/// the caller's environment, no default configuration file ([`NO_DEFAULT_CONFIG_DIR`]),
/// stdin and stdout to /dev/null (a test may set them otherwise), killed when dropped.
pub(crate) fn webrep<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("WEBREP_CONFIG")
        .env("WEBREP_DEFAULT_CONFIG_DIR", NO_DEFAULT_CONFIG_DIR)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd` to its end with stdout and stderr captured (killed if it runs 30 s, so that a
/// broken build fails instead of hanging).
pub(crate) async fn run_to_end(mut cmd: tokio::process::Command) -> std::process::Output {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} still running after 30 s"))
        .unwrap()
}

/// A running `webrep` child process whose stderr lines are read as they come and kept.
pub(crate) struct Webrep {
    pub child: tokio::process::Child,
    log: Arc<std::sync::Mutex<Vec<String>>>,
    /// Set once stderr is closed (the process ended).
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// How many lines [`Webrep::next_line_where`] has gone past.
    seen: usize,
}

impl Webrep {
    /// Spawns `cmd` (see [`webrep`]) with its stderr captured.
    pub(crate) fn spawn(mut cmd: tokio::process::Command) -> Webrep {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (keep, done) = (log.clone(), closed.clone());
        // Reading all along also keeps the child from blocking on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                keep.lock().unwrap().push(l);
            }
            done.store(true, Ordering::SeqCst);
        });
        Webrep {
            child,
            log,
            closed,
            seen: 0,
        }
    }

    /// Spawns `cmd` with stdio as the test set it (nothing captured).
    pub(crate) fn spawn_uncaptured(mut cmd: tokio::process::Command) -> Webrep {
        Webrep {
            child: cmd.spawn().unwrap(),
            log: Arc::default(),
            closed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            seen: 0,
        }
    }

    /// The next line not yet gone past that satisfies `pred`; `None` when stderr closed
    /// first. Bounded: a process that neither logs it nor ends fails the test.
    pub(crate) async fn next_line_where(
        &mut self,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let (log, closed, seen) = (&self.log, &self.closed, &mut self.seen);
        eventually_ok(what, BOUND, || {
            // Read `closed` first: lines logged before it was set are all in `log`.
            let ended = closed.load(Ordering::SeqCst);
            let log = log.lock().unwrap();
            let from = *seen;
            let found = log[from..].iter().position(|l| pred(l)).map(|i| from + i);
            *seen = found.map_or(log.len(), |i| i + 1);
            let r = match found {
                Some(i) => Ok(Some(log[i].clone())),
                None if ended => Ok(None),
                None => Err(log.last().cloned()),
            };
            std::future::ready(r)
        })
        .await
    }

    /// Waits (bounded) for the next line with one of `keys` (`listen.addr=`...) and returns
    /// the word after it; `None` when the process ended first.
    pub(crate) async fn wait_field(&mut self, keys: &[&str]) -> Option<String> {
        let what = format!("a line with {keys:?}");
        let line = self
            .next_line_where(&what, |l| keys.iter().any(|k| field(l, k).is_some()))
            .await?;
        keys.iter().find_map(|k| field(&line, k))
    }

    /// The word after `key` on the last line seen so far that contains `marker`.
    pub(crate) fn seen_field(&self, marker: &str, key: &str) -> Option<String> {
        let log = self.log.lock().unwrap();
        log[..self.seen]
            .iter()
            .rfind(|l| l.contains(marker))
            .and_then(|l| field(l, key))
    }

    /// Waits (bounded) for the next line containing `needle`.
    pub(crate) async fn wait_for_line(&mut self, needle: &str) -> String {
        let what = format!("a line containing {needle:?}");
        self.next_line_where(&what, |l| l.contains(needle))
            .await
            .unwrap_or_else(|| panic!("stderr closed before {needle:?}: {:#?}", self.lines()))
    }

    /// Waits (bounded) until some line so far contains `needle`.
    pub(crate) async fn wait_logged(&self, needle: &str) {
        eventually_ok(&format!("a line containing {needle:?}"), BOUND, || {
            let log = self.log.lock().unwrap();
            let r = if log.iter().any(|l| l.contains(needle)) {
                Ok(())
            } else {
                Err(log.clone())
            };
            std::future::ready(r)
        })
        .await
    }

    /// Every line logged so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The lines up to the last one [`Webrep::next_line_where`] returned.
    pub(crate) fn lines_seen(&self) -> Vec<String> {
        self.log.lock().unwrap()[..self.seen].to_vec()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Sends signal `sig` (`TERM`, `HUP`...).
    pub(crate) fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits (bounded; else panics with `what`) for the process to exit; its exit status.
    pub(crate) async fn exit_status(&mut self, what: &str) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect(what)
            .unwrap()
    }

    /// [`Webrep::exit_status`]'s code.
    pub(crate) async fn exit_code(&mut self, what: &str) -> Option<i32> {
        self.exit_status(what).await.code()
    }

    /// SIGTERM, and its exit code.
    pub(crate) async fn terminate(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.exit_code("exits within 30 s of SIGTERM").await
    }

    /// `kill -9`, and waits for the process to be gone.
    pub(crate) async fn kill_9(&mut self) {
        self.child.kill().await.unwrap();
    }
}

/// The word after `key` in a log line (`listen.addr=127.0.0.1:3128 ...`).
pub(crate) fn field(line: &str, key: &str) -> Option<String> {
    Some(
        line.split(key)
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

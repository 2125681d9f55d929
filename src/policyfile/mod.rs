//! Loading policy files and swapping in new versions while the proxy runs, and the `policy
//! check` command: the I/O around the pure [`crate::policy`].
//!
//! A [`PolicyHandle`] holds the live [`Policy`] in an [`ArcSwap`]: readers take a lock-free
//! snapshot per request ([`PolicyHandle::current`]); [`PolicyHandle::reload`] reads and
//! compiles the file off the request path and swaps the result in with one atomic store, so
//! a request never sees half a policy and in-flight requests finish under the snapshot they
//! took. Reloads are serialised by a mutex. An invalid or unreadable file keeps the running
//! policy: the reload logs `policy reload aborted` with every error, and the generation
//! stays where it was. Each successful load bumps the generation (1 for the first load), and
//! every attempt is published to [`PolicyHandle::subscribe`] receivers.
//!
//! The file is read through [`crate::fsread`]: a regular file of at most
//! [`crate::fsread::POLICY_MAX`] bytes, so a policy path swapped for a FIFO or a device fails
//! that reload at once (the running policy stays) instead of blocking it. The trigger tasks
//! stop at shutdown without waiting for a reload in progress.
//!
//! Triggers:
//! - [`PolicyHandle::watcher`]: a `notify` watch on the file's *parent directory*
//!   (editors and ConfigMap updates replace the file by rename, which would leave a watch on
//!   the file itself pointing at a dead inode), filtered by file name, debounced, then a
//!   reload on the blocking pool. When a reloaded config names another file
//!   ([`PolicyHandle::set_path`]), the watch moves to that file's directory.
//! - [`PolicyHandle::reload_async`], which the composition root calls on SIGHUP and the
//!   admin API on `POST /v1/reload`.
//!
//! # Wiring
//! At startup the composition root (`crate::app`) loads the handle, runs its
//! [`PolicyHandle::watcher`] as a background task and hands the handle to the proxy's
//! filter; per request `let p = handle.current();` then
//! [`evaluate`](crate::policy::evaluate)`(&p, ..)`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::policy::{Policy, PolicyErrors};

mod check;
pub use check::check_command;

/// The default quiet period before a file change is acted on.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(300);

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (the error names it).
    #[error("cannot read policy file {0}")]
    Read(crate::fsread::ReadError),
    /// The file is not a valid policy.
    #[error("{0}")]
    Invalid(PolicyErrors),
}

/// Reads and compiles a policy file (generation 0).
///
/// # Errors
/// [`LoadError::Read`] or [`LoadError::Invalid`].
pub fn load_file(path: &Path) -> Result<Policy, LoadError> {
    let text =
        crate::fsread::read_to_string(path, crate::fsread::POLICY_MAX).map_err(LoadError::Read)?;
    Policy::from_yaml(&text, &path.display().to_string()).map_err(LoadError::Invalid)
}

/// The outcome of one load or reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadEvent {
    /// Attempts so far (0 for the initial load).
    pub attempt: u64,
    /// The live generation after the attempt.
    pub generation: u64,
    /// Why the attempt failed; `None` when the new policy is live.
    pub error: Option<String>,
}

/// The live policy of one file, swappable at run time.
#[derive(Debug)]
pub struct PolicyHandle {
    /// The file reloads read; a reloaded config may name another one.
    path: ArcSwap<PathBuf>,
    /// Tells the file watch that `path` changed.
    moved: watch::Sender<()>,
    /// The text of a policy built into the binary, read instead of `path` (which then only
    /// names it).
    builtin: Option<&'static str>,
    current: ArcSwap<Policy>,
    /// Serialises reloads (held across read + compile + swap; never across an await).
    reload_lock: Mutex<u64>,
    events: watch::Sender<ReloadEvent>,
    /// Reloads that failed (the running policy was kept), for metrics.
    pub reload_failures: std::sync::atomic::AtomicU64,
}

impl PolicyHandle {
    /// Loads `path` as generation 1.
    ///
    /// # Errors
    /// [`LoadError`] when the file cannot be read or is invalid.
    pub fn load(path: impl Into<PathBuf>) -> Result<Arc<Self>, LoadError> {
        let path = path.into();
        let policy = load_file(&path)?;
        Ok(Self::with_policy(path, policy))
    }

    /// A handle whose generation 1 is `policy` (already compiled, e.g. a built-in default);
    /// reloads read `path`.
    pub fn with_policy(path: impl Into<PathBuf>, mut policy: Policy) -> Arc<Self> {
        let path = path.into();
        policy.set_generation(1);
        let (events, _) = watch::channel(ReloadEvent {
            attempt: 0,
            generation: 1,
            error: None,
        });
        Arc::new(Self {
            path: ArcSwap::from_pointee(path),
            moved: watch::channel(()).0,
            builtin: None,
            current: ArcSwap::from_pointee(policy),
            reload_lock: Mutex::new(0),
            events,
            reload_failures: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A handle on a policy built into the binary: `text`, compiled as generation 1 and
    /// again on each reload (there is no file to watch); `name` names it in errors and logs.
    ///
    /// # Errors
    /// [`LoadError::Invalid`] when the text is not a valid policy.
    pub fn builtin(name: &str, text: &'static str) -> Result<Arc<Self>, LoadError> {
        let policy = Policy::from_yaml(text, name).map_err(LoadError::Invalid)?;
        let mut handle = Self::with_policy(name, policy);
        if let Some(h) = Arc::get_mut(&mut handle) {
            h.builtin = Some(text);
        }
        Ok(handle)
    }

    /// Whether the policy is built into the binary rather than read from a file.
    pub fn is_builtin(&self) -> bool {
        self.builtin.is_some()
    }

    /// The file this handle loads (for a built-in policy, its name).
    pub fn path(&self) -> Arc<PathBuf> {
        self.path.load_full()
    }

    /// Makes reloads read `path` from now on (the running policy stays until the next
    /// reload) and moves the file watch to it. Returns whether the path changed; a
    /// built-in policy keeps reading its text (choosing a file instead needs a restart).
    pub fn set_path(&self, path: &Path) -> bool {
        if self.builtin.is_some() || self.path.load().as_path() == path {
            return false;
        }
        self.path.store(Arc::new(path.to_owned()));
        self.moved.send_replace(());
        true
    }

    /// A lock-free snapshot of the live policy; hold it for the whole request.
    pub fn current(&self) -> arc_swap::Guard<Arc<Policy>> {
        self.current.load()
    }

    /// An owned reference to the live policy (for holding across long awaits).
    pub fn snapshot(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// The generation of the live policy.
    pub fn generation(&self) -> u64 {
        self.current.load().generation()
    }

    /// Receives the outcome of every reload attempt from now on.
    pub fn subscribe(&self) -> watch::Receiver<ReloadEvent> {
        self.events.subscribe()
    }

    /// Reads and compiles the file and, if it is valid, makes it live. Blocking (file I/O
    /// and compilation): call it from `spawn_blocking` on a runtime. Concurrent calls run
    /// one after the other.
    ///
    /// # Errors
    /// [`LoadError`]; the running policy is kept and the error is logged.
    pub fn reload(&self) -> Result<u64, LoadError> {
        let mut attempts = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *attempts += 1;
        let live = self.current.load().generation();
        let path = self.path();
        let loaded = match self.builtin {
            Some(text) => {
                Policy::from_yaml(text, &path.display().to_string()).map_err(LoadError::Invalid)
            }
            None => load_file(&path),
        };
        match loaded {
            Ok(mut policy) => {
                let generation = live + 1;
                policy.set_generation(generation);
                tracing::info!(
                    path = %path.display(),
                    generation,
                    summary = %policy.summary(),
                    "policy reloaded"
                );
                self.current.store(Arc::new(policy));
                self.events.send_replace(ReloadEvent {
                    attempt: *attempts,
                    generation,
                    error: None,
                });
                Ok(generation)
            }
            Err(e) => {
                self.reload_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    path = %path.display(),
                    generation = live,
                    error = %e,
                    "policy reload aborted; keeping the running policy"
                );
                self.events.send_replace(ReloadEvent {
                    attempt: *attempts,
                    generation: live,
                    error: Some(e.to_string()),
                });
                Err(e)
            }
        }
    }

    /// [`reload`](Self::reload) on the blocking pool.
    pub async fn reload_async(self: &Arc<Self>) -> Result<u64, LoadError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.reload())
            .await
            .unwrap_or_else(|e| {
                Err(LoadError::Read(crate::fsread::ReadError::Io {
                    path: self.path().to_path_buf(),
                    error: io::Error::other(e),
                }))
            })
    }

    /// Watches the file's parent directory; the task it returns reloads once changes to the
    /// file have been quiet for `debounce`, and ends when `shutdown` is cancelled. The watch
    /// is set up before this returns, and follows [`set_path`](Self::set_path).
    ///
    /// # Errors
    /// When the watch cannot be set up (no such directory, inotify limits).
    pub fn watcher(
        self: &Arc<Self>,
        debounce: Duration,
        shutdown: CancellationToken,
    ) -> notify::Result<impl Future<Output = ()> + Send + 'static + use<>> {
        // Capacity 1: one pending "something changed" is all the task needs to know.
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let watched = Arc::clone(self);
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                match res {
                    Ok(ev) => {
                        // Access events (our own reads) must not trigger a reload.
                        let relevant = matches!(
                            ev.kind,
                            EventKind::Create(_)
                                | EventKind::Modify(_)
                                | EventKind::Remove(_)
                                | EventKind::Any
                        );
                        let path = watched.path();
                        let name = path.file_name();
                        if relevant
                            && ev
                                .paths
                                .iter()
                                .any(|p| p.file_name().is_some() && p.file_name() == name)
                        {
                            let _ = tx.try_send(());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "policy file watch error"),
                }
            })?;
        let mut dir = parent_dir(&self.path());
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let handle = Arc::clone(self);
        let mut moved = self.moved.subscribe();
        Ok(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = rx.recv() => if r.is_none() { return },
                    Ok(()) = moved.changed() => {
                        dir = rewatch(&mut watcher, dir, &handle.path());
                        continue;
                    }
                }
                // Debounce: editors write in several steps; wait for quiet.
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        r = tokio::time::timeout(debounce, rx.recv()) => match r {
                            Ok(Some(())) => {}
                            Ok(None) => return,
                            Err(_) => break,
                        },
                    }
                }
                tracing::debug!(path = %handle.path().display(), "policy file changed");
                // The outcome is logged and published by `reload` itself; shutdown does not
                // wait for it.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = handle.reload_async() => {}
                }
            }
        })
    }
}

/// The directory a file is in (`.` for a bare name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Moves `watcher` from `dir` to the directory of `path`; the directory now watched.
fn rewatch(watcher: &mut notify::RecommendedWatcher, dir: PathBuf, path: &Path) -> PathBuf {
    let new = parent_dir(path);
    if new == dir {
        return dir;
    }
    match watcher.watch(&new, RecursiveMode::NonRecursive) {
        Ok(()) => {
            let _ = watcher.unwatch(&dir);
            tracing::info!(dir = %new.display(), "policy file watch moved");
            new
        }
        Err(e) => {
            tracing::warn!(error = %e, dir = %new.display(),
                "cannot watch the new policy file's directory; it reloads on SIGHUP only");
            dir
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "security_level: medium\n";
    const V2: &str = "security_level: high\nuntested: block\n";
    const BAD: &str = "security_level: medium\nlists:\n  blocked: [\"example.*\"]\n";

    /// Replaces the file by rename, as editors and ConfigMap updates do.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn untested(p: &Policy) -> crate::policy::Action {
        let url = crate::canon::canonicalize("http://example.com/").unwrap();
        let facts = crate::policy::RequestFacts {
            url: &url,
            client: "192.0.2.1".parse().unwrap(),
            user: None,
            groups: &[],
            now: jiff::Timestamp::UNIX_EPOCH,
        };
        let v = crate::model::Verdict::untested();
        crate::policy::evaluate(p, &facts, Some(&v)).action
    }

    #[test]
    fn reload_swaps_valid_and_keeps_old_on_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, V1).unwrap();
        let h = PolicyHandle::load(&path).unwrap();
        assert_eq!(h.generation(), 1);
        let before = h.current();
        replace(&path, V2);
        assert_eq!(h.reload().unwrap(), 2);
        assert_eq!(h.generation(), 2);
        assert_eq!(untested(&h.current()), crate::policy::Action::Block);
        // A snapshot taken earlier still sees the policy it started with.
        assert_eq!(before.generation(), 1);
        assert_eq!(untested(&before), crate::policy::Action::Allow);
        replace(&path, BAD);
        let err = h.reload().unwrap_err().to_string();
        assert!(err.contains("p.yaml:3:"), "{err}");
        assert_eq!(h.generation(), 2);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(h.reload(), Err(LoadError::Read(_))));
        assert_eq!(h.generation(), 2);
        assert_eq!(untested(&h.current()), crate::policy::Action::Block);
    }

    #[test]
    fn load_fails_on_invalid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, BAD).unwrap();
        assert!(matches!(
            PolicyHandle::load(&path),
            Err(LoadError::Invalid(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watcher_reloads_on_change_and_keeps_old_on_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, V1).unwrap();
        let h = PolicyHandle::load(&path).unwrap();
        let mut events = h.subscribe();
        let stop = CancellationToken::new();
        let task = tokio::spawn(h.watcher(Duration::from_millis(50), stop.clone()).unwrap());
        // A file next to it changing is not a reason to reload.
        std::fs::write(dir.path().join("other.yaml"), "x").unwrap();

        replace(&path, V2);
        let wait = Duration::from_secs(20);
        let ev = tokio::time::timeout(wait, events.wait_for(|e| e.attempt >= 1))
            .await
            .expect("no reload within 20 s")
            .unwrap()
            .clone();
        assert_eq!(ev.error, None);
        assert_eq!(ev.generation, 2);
        assert_eq!(h.generation(), 2);
        assert_eq!(untested(&h.current()), crate::policy::Action::Block);

        replace(&path, BAD);
        let ev = tokio::time::timeout(wait, events.wait_for(|e| e.error.is_some()))
            .await
            .expect("no reload attempt within 20 s")
            .unwrap()
            .clone();
        assert!(
            ev.error
                .as_deref()
                .unwrap_or("")
                .contains("top-level label")
        );
        assert_eq!(ev.generation, 2);
        assert_eq!(h.generation(), 2);
        assert_eq!(untested(&h.current()), crate::policy::Action::Block);

        stop.cancel();
        tokio::time::timeout(wait, task).await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_path_is_read_on_reload_and_its_directory_watched() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (old, new) = (a.path().join("policy.yaml"), b.path().join("other.yaml"));
        std::fs::write(&old, V1).unwrap();
        std::fs::write(&new, V2).unwrap();
        let h = PolicyHandle::load(&old).unwrap();
        let mut events = h.subscribe();
        let stop = CancellationToken::new();
        let task = tokio::spawn(h.watcher(Duration::from_millis(50), stop.clone()).unwrap());
        assert!(h.set_path(&new));
        assert!(!h.set_path(&new), "the same path again is no change");
        assert_eq!(h.generation(), 1, "the running policy stays until a reload");
        assert_eq!(h.reload().unwrap(), 2);
        assert_eq!(untested(&h.current()), crate::policy::Action::Block);
        // The watch follows: a change to the new file reloads it. The move happens on the
        // watcher task, so keep changing the file until a reload comes.
        let wait = Duration::from_secs(20);
        let seen = tokio::time::timeout(wait, async {
            loop {
                replace(&new, V1);
                let e = tokio::time::timeout(
                    Duration::from_millis(500),
                    events.wait_for(|e| e.attempt >= 2),
                )
                .await;
                if let Ok(Ok(e)) = e {
                    return e.clone();
                }
            }
        })
        .await
        .expect("no reload of the new file within 20 s");
        assert_eq!(seen.error, None);
        assert_eq!(untested(&h.current()), crate::policy::Action::Allow);
        stop.cancel();
        tokio::time::timeout(wait, task).await.unwrap().unwrap();
    }
}

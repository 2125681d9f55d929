//! Proxy authentication: HTTP Basic (`Proxy-Authorization`) against a users file of password
//! hashes.
//!
//! The users file has one `name:hash` per line (`#` comments and blank lines allowed); a hash
//! is an argon2 PHC string (`$argon2id$...`, what `webrep passwd` prints) or bcrypt (`$2a$`,
//! `$2b$`, `$2y$`, what `htpasswd -B` writes). Plain-text or crypt/MD5 entries are refused at
//! load time, with the line number.
//!
//! Where it sits: after the client network check, before anything is forwarded or tunnelled;
//! the proxy's own pages (health) need no credentials. A missing or wrong credential gets 407
//! with `Proxy-Authenticate`. The verified user name travels with the request (access log,
//! later policy rules).
//!
//! # A check, in order
//! 1. A credential verified before (for `auth.credentials_cache_seconds`) is accepted: a
//!    keyed SHA-256 of the header value and a map lookup, never the plain password.
//! 2. A client address over its failure budget (`budget`) is answered 429 after
//!    `auth.failure_delay_ms`.
//! 3. A credential found wrong before (for `auth.failed_credentials_cache_seconds`) is
//!    answered 407 without hashing again.
//! 4. Otherwise the password is hashed on the fixed `pool` (`auth.hash_threads`, with a
//!    queue of `auth.hash_queue`). A full queue is answered 503 after `auth.failure_delay_ms`
//!    (a client that retries at once would otherwise spin on 503s) and counts against the
//!    address's budget, like a wrong credential. Unknown users cost one dummy verification, so
//!    timing does not reveal which names exist.
//!
//! # What it costs
//! Password hashing is deliberately slow (tens of milliseconds and, for argon2, its memory
//! cost). Neither a flood of wrong passwords nor many clients can make more than
//! `auth.hash_threads` hashes run at once or more than `auth.hash_queue` wait, so the memory
//! and threads a flood can take are fixed; requests with remembered credentials never wait
//! for the pool.
//!
//! The pool, the failure budget and the counters ([`PasswordChecks`]) live as long as the
//! proxy; the users and both credential caches are replaced together on reload.

mod budget;
mod pool;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use budget::FailureBudget;
use pool::{HashPool, PoolError, Scratch};

/// An argon2 hash from the users file, taken apart once at load.
struct Argon2Hash {
    algorithm: argon2::Algorithm,
    version: argon2::Version,
    params: argon2::Params,
    salt: Vec<u8>,
    expected: argon2::password_hash::Output,
}

impl Argon2Hash {
    fn parse(s: &str) -> Result<Self, String> {
        let bad = |e: &dyn std::fmt::Display| format!("bad argon2 hash: {e}");
        let h = argon2::PasswordHash::new(s).map_err(|e| bad(&e))?;
        let algorithm = argon2::Algorithm::try_from(h.algorithm).map_err(|e| bad(&e))?;
        let version = match h.version {
            Some(v) => argon2::Version::try_from(v).map_err(|e| bad(&e))?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&h).map_err(|e| bad(&e))?;
        let mut salt = [0u8; 64];
        let salt = h
            .salt
            .ok_or_else(|| bad(&"no salt"))?
            .decode_b64(&mut salt)
            .map_err(|e| bad(&e))?
            .to_vec();
        let expected = h.hash.ok_or_else(|| bad(&"no hash"))?;
        Ok(Self {
            algorithm,
            version,
            params,
            salt,
            expected,
        })
    }

    /// Hashes `password` in `scratch`'s memory and compares in constant time.
    fn verify(&self, password: &[u8], scratch: &mut Scratch) -> bool {
        let a = argon2::Argon2::new(self.algorithm, self.version, self.params.clone());
        let mut out = [0u8; argon2::password_hash::Output::MAX_LENGTH];
        let out = &mut out[..self.expected.len()];
        let blocks = scratch.blocks(self.params.block_count());
        a.hash_password_into_with_memory(password, &self.salt, out, blocks)
            .is_ok()
            && argon2::password_hash::Output::new(out).is_ok_and(|o| o == self.expected)
    }
}

/// A password hash from the users file.
#[derive(Clone)]
enum PasswordHash {
    Argon2(Arc<Argon2Hash>),
    Bcrypt(String),
}

impl PasswordHash {
    fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("$argon2") {
            Ok(Self::Argon2(Arc::new(Argon2Hash::parse(s)?)))
        } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p)) {
            if s.len() != 60 {
                return Err("bad bcrypt hash: expected 60 characters".into());
            }
            Ok(Self::Bcrypt(s.to_owned()))
        } else {
            Err(
                "unsupported hash: use argon2 (`webrep passwd NAME`) or bcrypt (`htpasswd -B`)"
                    .into(),
            )
        }
    }

    fn verify(&self, password: &[u8], scratch: &mut Scratch) -> bool {
        match self {
            Self::Argon2(h) => h.verify(password, scratch),
            Self::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        }
    }
}

/// Why a users file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read users file {0}")]
    Read(crate::fsread::ReadError),
    #[error("{path}:{line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: no users defined")]
    Empty { path: String },
    #[error("cannot start the password-check threads")]
    Threads(#[source] std::io::Error),
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated as this user.
    User(Arc<str>),
    /// No `Proxy-Authorization: Basic` header.
    Missing,
    /// A header was present but the name or password is wrong, or it is malformed.
    Invalid,
    /// The client address sent too many wrong credentials; answered after a delay, without a
    /// check, until its window ends (in `retry_after`).
    Throttled { retry_after: Duration },
    /// Every password-check thread is busy and the queue is full: not checked.
    Busy,
}

/// How checks ended, for `/metrics` (`webrep_auth_checks_total{result}`).
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Accepted from the cache of verified credentials.
    pub user_cached: AtomicU64,
    /// Accepted after hashing.
    pub user_hashed: AtomicU64,
    /// Refused from the cache of wrong credentials (no hash).
    pub wrong_cached: AtomicU64,
    /// Refused after hashing.
    pub wrong_hashed: AtomicU64,
    /// Refused as malformed (not `Basic`, bad base64, no colon): no hash.
    pub malformed: AtomicU64,
    /// Refused with 429: the client address is over its failure budget.
    pub throttled: AtomicU64,
    /// Refused with 503: the pool's queue was full.
    pub busy: AtomicU64,
}

impl AuthStats {
    /// `(result label, count)` for each outcome.
    pub fn counts(&self) -> [(&'static str, u64); 7] {
        [
            ("user_cached", &self.user_cached),
            ("user_hashed", &self.user_hashed),
            ("wrong_cached", &self.wrong_cached),
            ("wrong_hashed", &self.wrong_hashed),
            ("malformed", &self.malformed),
            ("throttled", &self.throttled),
            ("busy", &self.busy),
        ]
        .map(|(k, c)| (k, c.load(Relaxed)))
    }
}

/// What outlives a users-file reload: the hashing pool, the per-address failure budget and
/// the counters.
#[derive(Debug)]
pub struct PasswordChecks {
    pool: HashPool,
    budget: Option<FailureBudget>,
    /// How long 429 and 503 answers are held back.
    delay: Duration,
    pub stats: AuthStats,
}

impl PasswordChecks {
    /// Starts the pool of `auth.hash_threads` threads.
    ///
    /// # Errors
    /// The system refused a thread.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        Ok(Self {
            pool: HashPool::new(config.hash_threads, config.hash_queue)
                .map_err(AuthError::Threads)?,
            budget: FailureBudget::new(config.failures_per_client, config.failure_window),
            delay: config.failure_delay,
            stats: AuthStats::default(),
        })
    }

    /// Password checks waiting for a thread now.
    pub fn queued(&self) -> usize {
        self.pool.queued()
    }
}

/// The loaded users and the caches of verified and of wrong credentials.
pub struct Authenticator {
    users: HashMap<String, PasswordHash>,
    realm: String,
    challenge: HeaderValue,
    verified: Option<moka::sync::Cache<[u8; 32], Arc<str>>>,
    rejected: Option<moka::sync::Cache<[u8; 32], ()>>,
    dummy: PasswordHash,
    /// Keys the cache keys, so that they are not plain hashes of credentials.
    key: [u8; 32],
    checks: Arc<PasswordChecks>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.len())
            .field("realm", &self.realm)
            .finish()
    }
}

impl Authenticator {
    /// Loads a users file; `checks` is the proxy's pool and failure budget.
    pub fn load(
        path: &Path,
        config: &AuthConfig,
        checks: Arc<PasswordChecks>,
    ) -> Result<Self, AuthError> {
        let p = path.display().to_string();
        let text =
            crate::secrets::read_to_string(path, crate::fsread::USERS_MAX, "auth.users_file")
                .map_err(AuthError::Read)?;
        Self::from_text(&text, &p, config, checks)
    }

    /// Parses users-file text; `origin` names it in errors.
    pub fn from_text(
        text: &str,
        origin: &str,
        config: &AuthConfig,
        checks: Arc<PasswordChecks>,
    ) -> Result<Self, AuthError> {
        let users = parse_users(text, origin)?;
        let realm = &config.realm;
        let challenge = HeaderValue::from_str(&format!(
            "Basic realm=\"{realm}\", charset=\"UTF-8\""
        ))
        .map_err(|_| AuthError::Line {
            path: origin.to_owned(),
            line: 0,
            reason: "realm is not a valid header value".into(),
        })?;
        // A real hash to spend the same time on when the user name is unknown.
        let dummy = users
            .values()
            .next()
            .cloned()
            .expect("users is not empty here");
        Ok(Self {
            users,
            realm: realm.clone(),
            challenge,
            verified: credential_cache(config.credentials_cache_ttl, 10_000),
            rejected: credential_cache(
                config.failed_credentials_cache_ttl,
                config.failed_credentials_cache_entries,
            ),
            dummy,
            key: rand::random(),
            checks,
        })
    }

    /// Users defined.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is defined (never, for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The `Proxy-Authenticate` value for 407 answers.
    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }

    /// The pool, failure budget and counters (shared with the next users file on reload).
    pub fn checks(&self) -> &Arc<PasswordChecks> {
        &self.checks
    }

    /// Checks a `Proxy-Authorization` header sent by `client`, in the order of the module
    /// doc. Hashing runs on the pool; an address over its budget waits out the delay here.
    pub async fn check(
        self: &Arc<Self>,
        header: Option<&HeaderValue>,
        client: IpAddr,
    ) -> AuthOutcome {
        let Some(value) = header else {
            return AuthOutcome::Missing;
        };
        let stats = &self.checks.stats;
        let key = self.cache_key(value);
        if let Some(user) = self.verified.as_ref().and_then(|c| c.get(&key)) {
            stats.user_cached.fetch_add(1, Relaxed);
            return AuthOutcome::User(user);
        }
        let budget = self.checks.budget.as_ref();
        if let Some(retry_after) = budget.and_then(|b| b.over(client)) {
            stats.throttled.fetch_add(1, Relaxed);
            tokio::time::sleep(self.checks.delay).await;
            return AuthOutcome::Throttled { retry_after };
        }
        let outcome = self.verify(value, key).await;
        if matches!(outcome, AuthOutcome::Invalid | AuthOutcome::Busy)
            && let Some(b) = budget
        {
            b.record_failure(client);
        }
        if outcome == AuthOutcome::Busy {
            tokio::time::sleep(self.checks.delay).await;
        }
        outcome
    }

    /// Steps 3 and 4 of a check: the cache of wrong credentials, then the pool.
    async fn verify(self: &Arc<Self>, value: &HeaderValue, key: [u8; 32]) -> AuthOutcome {
        let stats = &self.checks.stats;
        if self.rejected.as_ref().is_some_and(|c| c.contains_key(&key)) {
            stats.wrong_cached.fetch_add(1, Relaxed);
            return AuthOutcome::Invalid;
        }
        let Some((name, password)) = decode_basic(value) else {
            stats.malformed.fetch_add(1, Relaxed);
            return AuthOutcome::Invalid;
        };
        let this = self.clone();
        let checked = self
            .checks
            .pool
            .run(move |scratch| match this.users.get(&name) {
                Some(hash) if hash.verify(password.as_bytes(), scratch) => {
                    Some(Arc::<str>::from(name))
                }
                Some(_) => None,
                None => {
                    let _ = this.dummy.verify(password.as_bytes(), scratch);
                    None
                }
            })
            .await;
        match checked {
            Ok(Some(user)) => {
                stats.user_hashed.fetch_add(1, Relaxed);
                if let Some(c) = &self.verified {
                    c.insert(key, user.clone());
                }
                AuthOutcome::User(user)
            }
            Ok(None) => {
                stats.wrong_hashed.fetch_add(1, Relaxed);
                if let Some(c) = &self.rejected {
                    c.insert(key, ());
                }
                AuthOutcome::Invalid
            }
            Err(PoolError::Busy) => {
                stats.busy.fetch_add(1, Relaxed);
                AuthOutcome::Busy
            }
            Err(PoolError::Gone) => AuthOutcome::Invalid,
        }
    }

    /// The key of a header value in both credential caches.
    fn cache_key(&self, value: &HeaderValue) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.key)
            .chain_update(value.as_bytes())
            .finalize()
            .into()
    }
}

/// A cache of credentials (by [`Authenticator::cache_key`]); `None` when `ttl` or `entries`
/// is 0.
fn credential_cache<V: Clone + Send + Sync + 'static>(
    ttl: Duration,
    entries: u64,
) -> Option<moka::sync::Cache<[u8; 32], V>> {
    (!ttl.is_zero() && entries > 0).then(|| {
        moka::sync::Cache::builder()
            .max_capacity(entries)
            .time_to_live(ttl)
            .build()
    })
}

/// The `name:hash` lines of a users file.
/// Parses users-file text (`NAME:HASH` lines, `#` comments) as the proxy does, without
/// starting anything: how many users it holds (for `webrep config check`).
///
/// # Errors
/// As [`Authenticator::load`]: a bad line, or no users.
pub fn count_users(text: &str, origin: &str) -> Result<usize, AuthError> {
    parse_users(text, origin).map(|u| u.len())
}

fn parse_users(text: &str, origin: &str) -> Result<HashMap<String, PasswordHash>, AuthError> {
    let mut users = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| AuthError::Line {
            path: origin.to_owned(),
            line: i + 1,
            reason,
        };
        let (name, hash) = line
            .split_once(':')
            .ok_or_else(|| err("expected name:hash".into()))?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(err(format!("bad user name {name:?}")));
        }
        let hash = PasswordHash::parse(hash.trim()).map_err(err)?;
        if users.insert(name.to_owned(), hash).is_some() {
            return Err(err(format!("user {name:?} appears twice")));
        }
    }
    if users.is_empty() {
        return Err(AuthError::Empty {
            path: origin.to_owned(),
        });
    }
    Ok(users)
}

/// Decodes `Basic base64(name:password)`.
fn decode_basic(value: &HeaderValue) -> Option<(String, String)> {
    let s = value.to_str().ok()?.trim();
    let (scheme, rest) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

/// Hashes a password for the users file (argon2id with a random salt, PHC string).
pub fn hash_password(password: &str) -> Result<String, String> {
    hash_password_with(password, argon2::Params::default())
}

/// [`hash_password`] with argon2 parameters of the caller's choosing (tests use cheap ones).
pub fn hash_password_with(password: &str, params: argon2::Params) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> HeaderValue {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        HeaderValue::from_str(&format!("Basic {enc}")).unwrap()
    }

    fn config() -> AuthConfig {
        crate::config::Config::from_yaml("", "t").unwrap().auth
    }

    fn cheap() -> argon2::Params {
        argon2::Params::new(64, 1, 1, None).unwrap()
    }

    fn authenticator(text: &str, config: &AuthConfig) -> Arc<Authenticator> {
        let checks = Arc::new(PasswordChecks::new(config).unwrap());
        Arc::new(Authenticator::from_text(text, "u", config, checks).unwrap())
    }

    const ME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn argon2_and_bcrypt_users_authenticate() {
        let a = hash_password_with("s3cret", cheap()).unwrap();
        let b = bcrypt::hash("hunter2", 4).unwrap();
        let auth = authenticator(&format!("# users\nalice:{a}\n\nbob:{b}\n"), &config());
        let check = |h: HeaderValue| {
            let auth = auth.clone();
            async move { auth.check(Some(&h), ME).await }
        };
        assert_eq!(
            check(basic("alice", "s3cret")).await,
            AuthOutcome::User("alice".into())
        );
        // Second time from the cache.
        assert_eq!(
            check(basic("alice", "s3cret")).await,
            AuthOutcome::User("alice".into())
        );
        assert_eq!(
            check(basic("bob", "hunter2")).await,
            AuthOutcome::User("bob".into())
        );
        assert_eq!(check(basic("alice", "wrong")).await, AuthOutcome::Invalid);
        assert_eq!(
            check(basic("mallory", "s3cret")).await,
            AuthOutcome::Invalid
        );
        assert_eq!(
            check(HeaderValue::from_static("Bearer x")).await,
            AuthOutcome::Invalid
        );
        assert_eq!(
            check(HeaderValue::from_static("Basic !!!")).await,
            AuthOutcome::Invalid
        );
        assert_eq!(auth.check(None, ME).await, AuthOutcome::Missing);
        let s = &auth.checks().stats;
        assert_eq!(s.user_cached.load(Relaxed), 1);
        assert_eq!(s.user_hashed.load(Relaxed), 2);
        assert_eq!(s.wrong_hashed.load(Relaxed), 2);
        assert_eq!(s.malformed.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn the_default_argon2_parameters_verify_through_the_pool() {
        let a = hash_password("s3cret").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        let auth = authenticator(&format!("alice:{a}\n"), &config());
        assert_eq!(
            auth.check(Some(&basic("alice", "s3cret")), ME).await,
            AuthOutcome::User("alice".into())
        );
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let c = config();
        let checks = Arc::new(PasswordChecks::new(&c).unwrap());
        let load = |text: &str| Authenticator::from_text(text, "users", &c, checks.clone());
        let err = load("alice:plaintext\n").unwrap_err().to_string();
        assert!(err.starts_with("users:1: unsupported hash"), "{err}");
        let err = load("# c\nnocolon\n").unwrap_err().to_string();
        assert!(err.starts_with("users:2:"), "{err}");
        let err = load("a:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("users:1: bad argon2 hash"), "{err}");
        assert!(load("# only comments\n").is_err());
    }
}

/// User → groups, from `auth.groups_file`.
pub type Groups = std::collections::HashMap<String, Arc<[String]>>;

/// Reads a groups file: `group: member member ...` per line (members separated by spaces
/// or commas), `#` comments and blank lines skipped.
///
/// # Errors
/// The file cannot be read, or a line is not `group: members` (named with its number).
pub fn load_groups(path: &std::path::Path) -> anyhow::Result<Groups> {
    use anyhow::Context as _;
    let text = crate::fsread::read_to_string(path, crate::fsread::GROUPS_MAX)
        .context("auth.groups_file")?;
    parse_groups(&text).with_context(|| format!("auth.groups_file {}", path.display()))
}

/// A line of a groups file that is not `group: members`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct GroupsLineError {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

/// Parses groups-file text: `group: user user ...` lines, `#` comments.
///
/// # Errors
/// The first line that is not `group: members`.
pub fn parse_groups(text: &str) -> Result<Groups, GroupsLineError> {
    let mut by_user: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| GroupsLineError {
            line: i + 1,
            reason,
        };
        let Some((group, members)) = line.split_once(':') else {
            return Err(bad("expected `group: user user ...`".into()));
        };
        let group = group.trim();
        if group.is_empty() || group.chars().any(char::is_whitespace) {
            return Err(bad(format!("{group:?} is not a group name")));
        }
        for user in members
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|u| !u.is_empty())
        {
            let groups = by_user.entry(user.to_owned()).or_default();
            if !groups.iter().any(|g| g == group) {
                groups.push(group.to_owned());
            }
        }
    }
    Ok(by_user
        .into_iter()
        .map(|(u, g)| (u, Arc::from(g)))
        .collect())
}

#[cfg(test)]
mod group_tests {
    #[test]
    fn groups_files_map_users_to_their_groups() {
        let g =
            super::parse_groups("# groups\nstaff: alice bob\nfinance: bob, carol\n\nstaff: bob\n")
                .unwrap();
        assert_eq!(&*g["alice"], ["staff"]);
        assert_eq!(&*g["bob"], ["staff", "finance"]);
        assert_eq!(&*g["carol"], ["finance"]);
        let e = super::parse_groups("staff alice\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(super::parse_groups("a b: c\n").is_err());
    }
}

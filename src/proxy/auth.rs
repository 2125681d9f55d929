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
//! Cost: password hashing is deliberately slow (tens of milliseconds), so it runs on the
//! blocking pool and a successful check is remembered (keyed by a SHA-256 of the header
//! value, never the plain password) for `auth.credentials_cache_seconds`; a cached check is a
//! hash plus a map lookup. Unknown users cost one dummy verification, so timing does not
//! reveal which names exist.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use sha2::{Digest, Sha256};

/// A password hash from the users file.
#[derive(Clone)]
enum PasswordHash {
    Argon2(String),
    Bcrypt(String),
}

impl PasswordHash {
    fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with("$argon2") {
            argon2::PasswordHash::new(s).map_err(|e| format!("bad argon2 hash: {e}"))?;
            Ok(Self::Argon2(s.to_owned()))
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

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Argon2(h) => argon2::PasswordHash::new(h).is_ok_and(|parsed| {
                use argon2::PasswordVerifier as _;
                argon2::Argon2::default()
                    .verify_password(password, &parsed)
                    .is_ok()
            }),
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
}

/// The loaded users and the cache of verified credentials.
pub struct Authenticator {
    users: HashMap<String, PasswordHash>,
    realm: String,
    challenge: HeaderValue,
    verified: Option<moka::sync::Cache<[u8; 32], Arc<str>>>,
    dummy: PasswordHash,
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
    /// Loads a users file.
    pub fn load(path: &Path, realm: &str, cache_ttl: Duration) -> Result<Self, AuthError> {
        let p = path.display().to_string();
        let text = crate::fsread::read_to_string(path, crate::fsread::USERS_MAX)
            .map_err(AuthError::Read)?;
        Self::from_text(&text, &p, realm, cache_ttl)
    }

    /// Parses users-file text; `origin` names it in errors.
    pub fn from_text(
        text: &str,
        origin: &str,
        realm: &str,
        cache_ttl: Duration,
    ) -> Result<Self, AuthError> {
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
        let challenge = HeaderValue::from_str(&format!(
            "Basic realm=\"{realm}\", charset=\"UTF-8\""
        ))
        .map_err(|_| AuthError::Line {
            path: origin.to_owned(),
            line: 0,
            reason: "realm is not a valid header value".into(),
        })?;
        let verified = (!cache_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(cache_ttl)
                .build()
        });
        // A real hash to spend the same time on when the user name is unknown.
        let dummy = users
            .values()
            .next()
            .cloned()
            .expect("users is not empty here");
        Ok(Self {
            users,
            realm: realm.to_owned(),
            challenge,
            verified,
            dummy,
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

    /// Checks a `Proxy-Authorization` header. Slow hashing runs on the blocking pool.
    pub async fn check(self: &Arc<Self>, header: Option<&HeaderValue>) -> AuthOutcome {
        let Some(value) = header else {
            return AuthOutcome::Missing;
        };
        let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        if let Some(cache) = &self.verified
            && let Some(user) = cache.get(&key)
        {
            return AuthOutcome::User(user);
        }
        let Some((name, password)) = decode_basic(value) else {
            return AuthOutcome::Invalid;
        };
        let this = self.clone();
        let outcome = tokio::task::spawn_blocking(move || match this.users.get(&name) {
            Some(hash) if hash.verify(password.as_bytes()) => Some(Arc::<str>::from(name)),
            Some(_) => None,
            None => {
                let _ = this.dummy.verify(password.as_bytes());
                None
            }
        })
        .await
        .ok()
        .flatten();
        match outcome {
            Some(user) => {
                if let Some(cache) = &self.verified {
                    cache.insert(key, user.clone());
                }
                AuthOutcome::User(user)
            }
            None => AuthOutcome::Invalid,
        }
    }
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
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
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

    #[tokio::test]
    async fn argon2_and_bcrypt_users_authenticate() {
        let a = hash_password("s3cret").unwrap();
        let b = bcrypt::hash("hunter2", 4).unwrap();
        let text = format!("# users\nalice:{a}\n\nbob:{b}\n");
        let auth = Arc::new(
            Authenticator::from_text(&text, "u", "webrep", Duration::from_secs(60)).unwrap(),
        );
        assert_eq!(
            auth.check(Some(&basic("alice", "s3cret"))).await,
            AuthOutcome::User("alice".into())
        );
        // Second time from the cache.
        assert_eq!(
            auth.check(Some(&basic("alice", "s3cret"))).await,
            AuthOutcome::User("alice".into())
        );
        assert_eq!(
            auth.check(Some(&basic("bob", "hunter2"))).await,
            AuthOutcome::User("bob".into())
        );
        assert_eq!(
            auth.check(Some(&basic("alice", "wrong"))).await,
            AuthOutcome::Invalid
        );
        assert_eq!(
            auth.check(Some(&basic("mallory", "s3cret"))).await,
            AuthOutcome::Invalid
        );
        assert_eq!(
            auth.check(Some(&HeaderValue::from_static("Bearer x")))
                .await,
            AuthOutcome::Invalid
        );
        assert_eq!(
            auth.check(Some(&HeaderValue::from_static("Basic !!!")))
                .await,
            AuthOutcome::Invalid
        );
        assert_eq!(auth.check(None).await, AuthOutcome::Missing);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let err = Authenticator::from_text("alice:plaintext\n", "users", "r", Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("users:1: unsupported hash"), "{err}");
        let err = Authenticator::from_text("# c\nnocolon\n", "users", "r", Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("users:2:"), "{err}");
        assert!(
            Authenticator::from_text("# only comments\n", "users", "r", Duration::ZERO).is_err()
        );
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

fn parse_groups(text: &str) -> anyhow::Result<Groups> {
    let mut by_user: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((group, members)) = line.split_once(':') else {
            anyhow::bail!("line {}: expected `group: user user ...`", i + 1);
        };
        let group = group.trim();
        if group.is_empty() || group.chars().any(char::is_whitespace) {
            anyhow::bail!("line {}: {group:?} is not a group name", i + 1);
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

//! The local interception CA: created once by `webrep ca init`, loaded by the proxy, shown to
//! users with instructions for trusting it.
//!
//! # Files
//! `DIR/ca.pem` (the certificate, public) and `DIR/ca-key.pem` (the private key, created with
//! mode 0600). [`init`] never overwrites an existing CA unless asked to (`--force`), because
//! every browser that trusts the old one would then see errors.
//!
//! # What it costs
//! Creating a CA is one ECDSA P-256 key generation and one signature (well under a
//! millisecond); loading parses two PEM files. Both happen off the request path (at start).
//!
//! # How it fails
//! A missing, unreadable, unparsable or mismatched CA is a [`CaError`] naming the file and what
//! is wrong; a key file readable by group or others is refused (it could sign certificates
//! for any site).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, GeneralSubtree, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls_pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};

/// File name of the CA certificate inside the CA directory.
pub const CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const KEY_FILE: &str = "ca-key.pem";
/// Validity of a new CA, in days (5 years).
pub const CA_VALIDITY_DAYS: i64 = 5 * 365 + 1;

/// Why the CA could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA already exists and `force` was not given.
    #[error(
        "a CA already exists in {0} (browsers may trust it); use --force to replace it, or \
         `webrep ca show` to see it"
    )]
    Exists(PathBuf),
    /// There is no CA.
    #[error("no interception CA in {dir}: run `webrep ca init --dir {dir}` first")]
    Missing {
        /// The directory.
        dir: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file could not be read (the error names it).
    #[error(transparent)]
    Read(#[from] crate::fsread::ReadError),
    /// The key file is readable by others.
    #[error("{0}: the CA key is readable by group or others (mode {1:o}); chmod 600 it")]
    KeyPermissions(PathBuf, u32),
    /// A file does not hold what it should.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rcgen refused (a bad name constraint, ...).
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A loaded CA: what the minter signs with and what users are shown.
pub struct Ca {
    /// Signs leaf certificates.
    pub issuer: Issuer<'static, KeyPair>,
    /// The certificate, DER (sent after each leaf in the chain).
    pub cert_der: CertificateDer<'static>,
    /// The certificate, PEM (served on the proxy's `/ca.pem`).
    pub cert_pem: String,
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// The start of the certificate's validity.
    pub not_before: time::OffsetDateTime,
    /// The end of the certificate's validity (leaves minted with it end no later).
    pub not_after: time::OffsetDateTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// SHA-256 fingerprint of the certificate, as colon-separated upper-case hex (the form
    /// browsers show).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// What an admin must hear about the CA's validity now: not valid, or expiring within
    /// [`EXPIRY_WARNING_DAYS`]; `None` when neither. Said by `webrep ca show`, and by the
    /// proxy at start and every [`EXPIRY_CHECK_INTERVAL`] while it runs.
    pub fn expiry_problem(&self) -> Option<CaExpiry> {
        match self.valid_for() {
            None => Some(CaExpiry::NotValidNow),
            Some(left) if left < time::Duration::days(EXPIRY_WARNING_DAYS) => {
                Some(CaExpiry::Soon {
                    days: left.whole_days(),
                })
            }
            Some(_) => None,
        }
    }

    /// How long the certificate stays valid from now; `None` when it is not valid now.
    pub fn valid_for(&self) -> Option<time::Duration> {
        let now = time::OffsetDateTime::now_utc();
        (self.not_before <= now && now < self.not_after).then(|| self.not_after - now)
    }
}

/// From how many days before its end a CA's validity is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// How often a running proxy looks at its CA's validity again.
pub const EXPIRY_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// What is wrong with a CA's validity (see [`Ca::expiry_problem`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaExpiry {
    /// Not valid now (expired, or not yet valid): clients reject every certificate it signs.
    NotValidNow,
    /// Valid for fewer than [`EXPIRY_WARNING_DAYS`] more days (whole days left).
    Soon { days: i64 },
}

impl std::fmt::Display for CaExpiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaExpiry::NotValidNow => f.write_str(
                "not valid now; clients reject every certificate it signs, and the proxy \
                 does not start with it (`webrep ca init --force` makes a new one, which clients \
                 must trust again)",
            ),
            CaExpiry::Soon { days } => write!(
                f,
                "expires in {}; plan a new CA (`webrep ca init --force`) and its \
                 distribution to clients",
                crate::output::counted(days.unsigned_abs(), "day", "days")
            ),
        }
    }
}

/// SHA-256 of a DER certificate as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| hex::encode_upper([*b]))
        .collect::<Vec<_>>()
        .join(":")
}

/// What [`init`] creates.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Replace an existing CA.
    pub force: bool,
    /// Restrict the CA to these DNS subtrees (RFC 5280 name constraints), e.g. `corp.example`;
    /// empty: unconstrained (it can intercept any site, which is the usual setup).
    pub permitted_dns: Vec<String>,
    /// The CA's common name; default "webrep interception CA".
    pub common_name: Option<String>,
}

/// Creates a CA in `dir` (created if missing): `ca.pem` and `ca-key.pem` (mode 0600).
///
/// # Errors
/// [`CaError::Exists`] when a CA is there and `force` is false; I/O and generation errors.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<Ca, CaError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if !opts.force && (cert_path.exists() || key_path.exists()) {
        return Err(CaError::Exists(dir.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let cn = opts
        .common_name
        .clone()
        .unwrap_or_else(|| "webrep interception CA".to_owned());
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "webrep");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
    p.serial_number = Some(super::mint::random_serial());
    if !opts.permitted_dns.is_empty() {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: opts
                .permitted_dns
                .iter()
                .map(|d| GeneralSubtree::DnsName(d.clone()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
    }
    let key = KeyPair::generate()?;
    let key_pem = key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(p, key)?;
    let cert_pem = ca.pem();
    // The key first, with its mode from the start (never briefly world-readable); a forced
    // replacement removes the old files first so that `create_new` holds.
    if opts.force {
        for path in [&key_path, &cert_path] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CaError::Io {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
    }
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    write_new(&cert_path, cert_pem.as_bytes(), 0o644)?;
    load(dir)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Loads the CA of `dir`.
///
/// # Errors
/// [`CaError::Missing`] when neither file exists; [`CaError::Io`], [`CaError::KeyPermissions`],
/// [`CaError::Invalid`] otherwise.
pub fn load(dir: &Path) -> Result<Ca, CaError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if !cert_path.exists() && !key_path.exists() {
        return Err(CaError::Missing {
            dir: dir.display().to_string(),
        });
    }
    let read = |path: &Path| crate::fsread::read_to_string(path, crate::fsread::PEM_MAX);
    let open =
        crate::secrets::open_to(&key_path, crate::secrets::GROUP_OR_OTHERS).map_err(|source| {
            CaError::Io {
                path: key_path.clone(),
                source,
            }
        })?;
    if let Some(mode) = open {
        return Err(CaError::KeyPermissions(key_path, mode));
    }
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let invalid = |path: &Path, what: String| CaError::Invalid {
        path: path.to_owned(),
        what,
    };
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| invalid(&key_path, format!("not a private key: {e}")))?;
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| invalid(&cert_path, format!("not a PEM certificate: {e}")))?;
    let der: CertificateDer<'static> = der;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
        .map_err(|e| invalid(&cert_path, format!("not a usable CA certificate: {e}")))?;
    // The key must be the certificate's: compare the public keys.
    let (_, parsed) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| invalid(&cert_path, format!("unparsable certificate: {e}")))?;
    if parsed.public_key().subject_public_key.data.as_ref() != issuer.key().public_key_raw() {
        return Err(invalid(
            &key_path,
            format!("this key does not belong to {}", cert_path.display()),
        ));
    }
    if !parsed.is_ca() {
        return Err(invalid(&cert_path, "not a CA certificate".into()));
    }
    Ok(Ca {
        not_before: parsed.validity().not_before.to_datetime(),
        not_after: parsed.validity().not_after.to_datetime(),
        issuer,
        cert_der: der,
        cert_pem,
        dir: dir.to_owned(),
    })
}

/// What `webrep ca show` prints: file, subject, validity, fingerprint, constraints and the
/// trust instructions.
pub fn describe(ca: &Ca) -> String {
    let path = ca.dir.join(CERT_FILE).display().to_string();
    let mut out = format!("certificate: {path}\n");
    if let Ok((_, c)) = x509_parser::parse_x509_certificate(&ca.cert_der) {
        out.push_str(&format!("subject: {}\n", c.subject()));
        out.push_str(&format!(
            "valid: {} to {}\n",
            c.validity().not_before,
            c.validity().not_after
        ));
        if let Some(problem) = ca.expiry_problem() {
            out.push_str(&format!("WARNING: {problem}\n"));
        }
        if let Ok(Some(nc)) = c.name_constraints() {
            let names: Vec<String> = nc
                .value
                .permitted_subtrees
                .iter()
                .flatten()
                .map(|s| s.base.to_string())
                .collect();
            out.push_str(&format!("limited to: {}\n", names.join(", ")));
        }
    }
    out.push_str(&format!(
        "SHA-256 fingerprint: {}\n\nTo trust it:\n",
        ca.fingerprint()
    ));
    out.push_str(&trust_instructions(&path));
    out
}

/// Human instructions for trusting the CA, per platform (for `webrep ca show` and the
/// proxy's `/ca` page). `pem_path` is where the user finds the certificate file.
pub fn trust_instructions(pem_path: &str) -> String {
    format!(
        "Firefox: Settings > Privacy & Security > Certificates > View Certificates > Authorities > \
         Import {pem_path}, tick \"Trust this CA to identify websites\".\n\
         Chromium / Chrome on Linux (NSS): certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n webrep -i {pem_path}\n\
         Debian / Ubuntu system store: sudo cp {pem_path} /usr/local/share/ca-certificates/webrep.crt && sudo update-ca-certificates\n\
         Windows: certutil -addstore -f Root {pem_path}  (or double-click it > Install Certificate > Local Machine > Trusted Root Certification Authorities)\n\
         macOS: sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {pem_path}\n\
         Check the fingerprint shown with it before trusting it.\n"
    )
}

/// Writes a CA into `dir` whose validity ended yesterday (its key matches, so it loads).
/// Says every [`EXPIRY_CHECK_INTERVAL`] what is wrong with the interception CA's validity,
/// if anything: a warning while it expires within [`EXPIRY_WARNING_DAYS`], an error once
/// it is not valid (every intercepted client then fails its handshake). For alerting ahead of
/// time, `/metrics` has the end as `webrep_intercept_ca_expiry_timestamp_seconds`.
pub async fn watch_expiry(ca: std::sync::Arc<Ca>, shutdown: tokio_util::sync::CancellationToken) {
    watch(&ca, &shutdown, |p| log_problem(&ca, p)).await;
}

/// Logs what is wrong with the CA's validity: an error when it is not valid now, else a
/// warning.
pub fn log_problem(ca: &Ca, problem: CaExpiry) {
    let (dir, not_after) = (ca.dir.display(), ca.not_after);
    match problem {
        CaExpiry::NotValidNow => {
            tracing::error!(%dir, %not_after, "the interception CA is {problem}");
        }
        CaExpiry::Soon { .. } => {
            tracing::warn!(%dir, %not_after, "the interception CA {problem}");
        }
    }
}

/// The loop of [`watch_expiry`]: `report` gets each problem found.
async fn watch(
    ca: &Ca,
    shutdown: &tokio_util::sync::CancellationToken,
    mut report: impl FnMut(CaExpiry),
) {
    let mut every = tokio::time::interval_at(
        tokio::time::Instant::now() + EXPIRY_CHECK_INTERVAL,
        EXPIRY_CHECK_INTERVAL,
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Some(p) = ca.expiry_problem() {
            report(p);
        }
    }
}

#[cfg(test)]
pub(crate) fn write_expired_ca(dir: &Path) {
    let now = time::OffsetDateTime::now_utc();
    write_test_ca(dir, now - time::Duration::days(1));
}

/// Writes a CA into `dir`, valid from 30 days ago until `not_after`.
#[cfg(test)]
pub(crate) fn write_test_ca(dir: &Path, not_after: time::OffsetDateTime) {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "test CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    p.not_after = not_after;
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    write_new(&dir.join(CERT_FILE), cert.pem().as_bytes(), 0o644).unwrap();
    write_new(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn show_warns_about_a_ca_that_is_not_valid_now_or_expires_within_30_days() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = init(dir.path(), &InitOptions::default()).unwrap();
        assert!(!describe(&fresh).contains("WARNING"));
        let expired = tempfile::tempdir().unwrap();
        write_expired_ca(expired.path());
        let expired = load(expired.path()).unwrap();
        assert_eq!(expired.expiry_problem(), Some(CaExpiry::NotValidNow));
        let text = describe(&expired);
        assert!(text.contains("WARNING: not valid now"), "{text}");

        let soon = tempfile::tempdir().unwrap();
        let end = time::OffsetDateTime::now_utc() + time::Duration::hours(10 * 24 + 1);
        write_test_ca(soon.path(), end);
        let soon = load(soon.path()).unwrap();
        assert_eq!(soon.expiry_problem(), Some(CaExpiry::Soon { days: 10 }));
        assert_eq!(soon.not_after.unix_timestamp(), end.unix_timestamp());
        let text = describe(&soon);
        assert!(text.contains("WARNING: expires in 10 days"), "{text}");
        assert_eq!(fresh.expiry_problem(), None);
    }

    #[test]
    fn init_writes_a_private_key_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init(dir.path(), &InitOptions::default()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let fp = ca.fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(matches!(
            init(dir.path(), &InitOptions::default()),
            Err(CaError::Exists(_))
        ));
        assert_eq!(
            load(dir.path()).unwrap().fingerprint(),
            fp,
            "still the same CA"
        );
        let forced = InitOptions {
            force: true,
            ..InitOptions::default()
        };
        assert_ne!(init(dir.path(), &forced).unwrap().fingerprint(), fp);
    }

    #[test]
    fn load_explains_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("webrep ca init"), "{err}");
        init(dir.path(), &InitOptions::default()).unwrap();
        let key = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A key of another CA.
        let other = tempfile::tempdir().unwrap();
        init(other.path(), &InitOptions::default()).unwrap();
        std::fs::remove_file(&key).unwrap();
        std::fs::copy(other.path().join(KEY_FILE), &key).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
        // Garbage.
        std::fs::write(dir.path().join(CERT_FILE), "not pem").unwrap();
        assert!(load(dir.path()).is_err());
        std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }

    #[test]
    fn name_constraints_are_optional() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            permitted_dns: vec!["corp.example".into()],
            ..InitOptions::default()
        };
        let ca = init(dir.path(), &opts).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&ca.cert_der).unwrap();
        let nc = c.name_constraints().unwrap().unwrap().value;
        assert_eq!(nc.permitted_subtrees.as_ref().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_proxy_reports_its_ca_every_check_interval() {
        let dir = tempfile::tempdir().unwrap();
        write_expired_ca(dir.path());
        let expired = load(dir.path()).unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { watch(&expired, &shutdown, |p| tx.send(p).unwrap()).await }
        });
        // Nothing before the first interval ends (the start-up check said it already).
        tokio::time::advance(EXPIRY_CHECK_INTERVAL - std::time::Duration::from_secs(1)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(rx.try_recv().is_err());
        // Then once per interval (the paused clock jumps to each).
        assert_eq!(rx.recv().await, Some(CaExpiry::NotValidNow));
        assert_eq!(rx.recv().await, Some(CaExpiry::NotValidNow));
        shutdown.cancel();
        task.await.unwrap();

        // A CA far from its end: nothing to say, however long the proxy runs.
        let fresh = tempfile::tempdir().unwrap();
        let fresh = init(fresh.path(), &InitOptions::default()).unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let said = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn({
            let (shutdown, said) = (shutdown.clone(), said.clone());
            async move {
                watch(&fresh, &shutdown, |_| {
                    said.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                })
                .await
            }
        });
        tokio::time::sleep(EXPIRY_CHECK_INTERVAL * 3 + std::time::Duration::from_secs(1)).await;
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(said.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}

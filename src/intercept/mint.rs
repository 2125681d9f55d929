//! Leaf certificates minted on demand for intercepted hosts, cached per host.
//!
//! # What it does
//! [`Minter::server_config`] returns a rustls `ServerConfig` presenting a leaf certificate for
//! one host (a DNS name, or an IP literal as an IP SAN), signed by the local CA with its own
//! fresh ECDSA P-256 key (never the CA key), a random 128-bit serial, `serverAuth` only,
//! back-dated by [`BACKDATE`] against client clock skew and valid for the configured
//! lifetime; ALPN `h2` and `http/1.1`. Configs are cached in moka by host: concurrent
//! handshakes for one host mint once (moka coalesces the initialisation), and an entry lives
//! for half the leaf's lifetime so that no cached leaf is ever close to expiry.
//!
//! # Where it sits
//! In the CONNECT path, between the ClientHello (read with `LazyConfigAcceptor`) and the TLS
//! handshake with the client.
//!
//! # What it costs
//! A cache hit is one moka lookup. A mint is one key generation and one signature, about
//! 100-200 µs of CPU (see `cargo bench --bench intercept`). Memory: one `ServerConfig` with
//! its chain and key per cached host, a few KiB each, at most the configured entry count,
//! and one resumption store that all of them share (sized by the same count).
//!
//! # How it fails
//! At start, [`Minter::self_test`] refuses a CA that clients would reject (outside its
//! validity dates, or signing leaves a client that trusts it does not accept).
//! A host that cannot be a certificate name (empty, over 253 bytes, not a DNS name or IP) is
//! a [`MintError`]; the caller refuses the connection. Failures are not cached.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore as _;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ca::Ca;

/// How far back a leaf's `notBefore` is set, against clients whose clocks run slow.
pub const BACKDATE: Duration = Duration::from_secs(3600);

/// The name [`Minter::self_test`] mints for: an IP literal, so that a CA restricted to DNS
/// subtrees (`webrep ca init --permit`) still covers it (RFC 5280 constrains only names of
/// the constrained type). The test leaf is never cached, so it is never served.
pub const SELF_TEST_NAME: &str = "127.0.0.1";

/// Why a leaf could not be minted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MintError {
    /// The name cannot go into a certificate.
    #[error("{0:?} is not a host name a certificate can carry")]
    BadName(String),
    /// rcgen or rustls refused.
    #[error("minting a certificate for {host}: {reason}")]
    Failed {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
}

/// A random positive 128-bit serial number (RFC 5280: positive, at most 20 octets).
pub fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a shorter encoding: keeps the length constant
    SerialNumber::from_slice(&bytes)
}

/// Resumption sessions kept for `cache_entries` cached hosts: one per host, at least rustls's
/// default for one config (256) and at most 65,536 (the store preallocates its table: about
/// 120 bytes per slot, and a few hundred bytes per session held).
fn session_entries(cache_entries: u64) -> usize {
    usize::try_from(cache_entries.clamp(256, 65_536)).unwrap_or(65_536)
}

/// Mints and caches leaf certificates.
pub struct Minter {
    ca: Arc<Ca>,
    lifetime: Duration,
    cache: moka::future::Cache<String, Arc<ServerConfig>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// One store of TLS 1.3 resumption state for every minted config: a config of its own
    /// would preallocate rustls's default store (256 sessions, about 30 KB) per cached host.
    /// Sharing is safe: rustls resumes a session only under the server name it was made for.
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
    /// Leaves minted (cache misses), for metrics.
    pub minted: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("ca", &self.ca)
            .field("lifetime", &self.lifetime)
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// A minter signing with `ca`, leaves valid for `lifetime`, at most `cache_entries` kept.
    pub fn new(ca: Arc<Ca>, lifetime: Duration, cache_entries: u64) -> Minter {
        Minter {
            ca,
            lifetime,
            cache: moka::future::Cache::builder()
                .max_capacity(cache_entries)
                .time_to_live(lifetime / 2)
                .build(),
            provider: crate::tls::provider(),
            sessions: rustls::server::ServerSessionMemoryCache::new(session_entries(cache_entries)),
            minted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The CA.
    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    /// The cached server config for `host` (lower-case DNS name or IP literal, IPv6 without
    /// brackets), minting it on a miss; concurrent callers for one host share one mint.
    ///
    /// # Errors
    /// [`MintError`].
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, MintError> {
        let host = normalize(host)?;
        self.cache
            .try_get_with(host.clone(), async { self.mint(&host).map(Arc::new) })
            .await
            .map_err(|e: Arc<MintError>| (*e).clone())
    }

    /// Mints without the cache (the cold path; also used by the bench). The host is
    /// normalized as by [`server_config`](Self::server_config).
    ///
    /// # Errors
    /// [`MintError`].
    pub fn mint(&self, host: &str) -> Result<ServerConfig, MintError> {
        let config = self.build(host)?;
        self.minted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(config)
    }

    /// A server config with a fresh leaf for `host`, not counted in [`Self::minted`].
    fn build(&self, host: &str) -> Result<ServerConfig, MintError> {
        let (chain, key) = self.mint_leaf(host)?;
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| MintError::Failed {
                host: host.to_owned(),
                reason: e.to_string(),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = self.sessions.clone();
        Ok(config)
    }

    /// Mints the leaf: the chain (leaf, CA) and the leaf's private key.
    ///
    /// # Errors
    /// [`MintError`].
    pub fn mint_leaf(
        &self,
        host: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), MintError> {
        let host = normalize(host)?;
        let host = host.as_str();
        let failed = |reason: String| MintError::Failed {
            host: host.to_owned(),
            reason,
        };
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_owned()
                    .try_into()
                    .map_err(|_| MintError::BadName(host.to_owned()))?,
            ),
        }];
        p.distinguished_name.push(DnType::CommonName, host);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(random_serial());
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - BACKDATE;
        // No later than the CA's own end: a chain is no longer valid past it anyway.
        p.not_after = (now
            + time::Duration::try_from(self.lifetime).map_err(|e| failed(e.to_string()))?)
        .min(self.ca.not_after);
        let key = KeyPair::generate().map_err(|e| failed(e.to_string()))?;
        let leaf = p
            .signed_by(&key, &self.ca.issuer)
            .map_err(|e| failed(e.to_string()))?;
        let chain = vec![leaf.der().clone(), self.ca.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }

    /// Start-up check: mints a leaf for [`SELF_TEST_NAME`] (not cached) and runs a whole TLS
    /// handshake against it in memory, with a client that trusts only the CA, the way a
    /// browser that trusts the CA would, after checking the CA's own validity dates. A CA
    /// that clients would reject (expired or not yet valid) or that cannot sign leaves they
    /// accept fails here, once, with the reason, instead of at every client. It also runs the key
    /// generation, signing and handshake code once, so that the first real client does not
    /// pay for the process's cold start (lazy tables, first-touched pages): about 1 ms of a
    /// fresh process's first intercepted request.
    ///
    /// # Errors
    /// [`MintError::Failed`] naming what the client's verifier said.
    pub fn self_test(&self) -> Result<(), MintError> {
        let failed = |reason: String| MintError::Failed {
            host: SELF_TEST_NAME.to_owned(),
            reason,
        };
        // The verifier below takes the CA as a trust anchor and does not look at its dates;
        // browsers and OpenSSL do.
        if self.ca.valid_for().is_none() {
            return Err(failed(
                "the CA certificate is not valid now (`webrep ca show` gives its dates); \
                 clients reject it (`webrep ca init --force` makes a new one, which clients \
                 must trust again)"
                    .into(),
            ));
        }
        let server = Arc::new(self.build(SELF_TEST_NAME)?);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.cert_der.clone())
            .map_err(|e| failed(format!("the CA certificate is not a usable root: {e}")))?;
        let client = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| failed(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(SELF_TEST_NAME)
            .map_err(|e| failed(e.to_string()))?;
        let mut c = rustls::Connection::Client(
            rustls::ClientConnection::new(Arc::new(client), name)
                .map_err(|e| failed(e.to_string()))?,
        );
        let mut s = rustls::Connection::Server(
            rustls::ServerConnection::new(server).map_err(|e| failed(e.to_string()))?,
        );
        // One flight from `from` to `to`, in memory; `side` names who rejects what.
        let mut wire = Vec::with_capacity(4096);
        let mut flight = |from: &mut rustls::Connection, to: &mut rustls::Connection, side| {
            wire.clear();
            while from.wants_write() {
                from.write_tls(&mut wire)
                    .map_err(|e| failed(e.to_string()))?;
            }
            to.read_tls(&mut wire.as_slice())
                .map_err(|e| failed(e.to_string()))?;
            to.process_new_packets()
                .map(drop)
                .map_err(|e| failed(format!("{side}: {e}")))
        };
        // A TLS 1.3 handshake is two flights each way; a few more rounds are slack.
        for _ in 0..8 {
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
            flight(&mut c, &mut s, "server side")?;
            flight(
                &mut s,
                &mut c,
                "a client trusting the CA rejects its leaves",
            )?;
        }
        Err(failed("the handshake did not finish".into()))
    }

    /// Number of cached configs (approximate; moka counts lazily).
    pub fn cached(&self) -> u64 {
        self.cache.entry_count()
    }
}

/// Lower-cases a host, strips IPv6 brackets and a trailing dot, and checks that it can be a
/// certificate name.
fn normalize(host: &str) -> Result<String, MintError> {
    let h = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let bad = || MintError::BadName(host.chars().take(80).collect());
    if h.parse::<IpAddr>().is_ok() {
        return Ok(h);
    }
    if crate::canon::is_dns_name(&h, true) {
        Ok(h)
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ca::{InitOptions, init};
    use super::*;
    use x509_parser::extensions::{GeneralName, ParsedExtension};

    fn minter(dir: &std::path::Path) -> Minter {
        let ca = init(dir, &InitOptions::default()).unwrap();
        Minter::new(Arc::new(ca), Duration::from_secs(7 * 86400), 100)
    }

    #[test]
    fn leaf_has_san_issuer_fresh_key_and_short_validity() {
        let dir = tempfile::tempdir().unwrap();
        let m = minter(dir.path());
        let (_, ca) = x509_parser::parse_x509_certificate(&m.ca().cert_der).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for (host, want) in [
            ("www.example.test", GeneralName::DNSName("www.example.test")),
            ("192.0.2.7", GeneralName::IPAddress(&[192, 0, 2, 7])),
            (
                "::1",
                GeneralName::IPAddress(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            ),
        ] {
            let (chain, _) = m.mint_leaf(host).unwrap();
            assert_eq!(chain.len(), 2);
            assert_eq!(chain[1], m.ca().cert_der, "the CA follows the leaf");
            let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
            assert_eq!(leaf.issuer(), ca.subject(), "{host}");
            assert!(!leaf.is_ca());
            assert_ne!(
                leaf.public_key().subject_public_key.data,
                ca.public_key().subject_public_key.data,
                "the leaf key is not the CA key"
            );
            let sans: Vec<GeneralName<'_>> = leaf
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::SubjectAlternativeName(s) => Some(s.general_names.clone()),
                    _ => None,
                })
                .unwrap();
            assert_eq!(sans, vec![want], "{host}");
            let eku = leaf.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && !eku.client_auth);
            let nb = leaf.validity().not_before.timestamp();
            let na = leaf.validity().not_after.timestamp();
            assert!(
                nb <= now - 3000 && nb >= now - 3700,
                "back-dated about an hour"
            );
            assert!(na - now <= 7 * 86400 + 60 && na - now >= 7 * 86400 - 60);
            assert!(leaf.raw_serial().len() == 16 && leaf.raw_serial()[0] & 0x80 == 0);
        }
        // Two mints for one host differ in key and serial.
        let (a, _) = m.mint_leaf("x.test").unwrap();
        let (b, _) = m.mint_leaf("x.test").unwrap();
        let (_, a) = x509_parser::parse_x509_certificate(&a[0]).unwrap();
        let (_, b) = x509_parser::parse_x509_certificate(&b[0]).unwrap();
        assert_ne!(a.raw_serial(), b.raw_serial());
        assert!(matches!(m.mint("bad host"), Err(MintError::BadName(_))));
        assert!(normalize("").is_err());
        assert!(normalize(&"a".repeat(300)).is_err());
        assert_eq!(normalize("[::1]").unwrap(), "::1");
        assert_eq!(normalize("WWW.Example.TEST.").unwrap(), "www.example.test");
    }

    #[tokio::test]
    async fn concurrent_mints_for_one_host_are_coalesced() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(minter(dir.path()));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let m = m.clone();
            tasks.push(tokio::spawn(async move {
                m.server_config("coalesce.test").await.unwrap()
            }));
        }
        let mut configs = Vec::new();
        for t in tasks {
            configs.push(t.await.unwrap());
        }
        assert!(configs.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        let again = m.server_config("COALESCE.test.").await.unwrap();
        assert!(Arc::ptr_eq(&again, &configs[0]), "one cache entry per host");
        let other = m.server_config("other.test").await.unwrap();
        assert!(!Arc::ptr_eq(&other, &configs[0]));
        assert!(m.server_config("no such host").await.is_err());
    }

    #[test]
    fn the_self_test_passes_a_good_ca_and_names_what_is_wrong_with_an_expired_one() {
        let dir = tempfile::tempdir().unwrap();
        let m = minter(dir.path());
        m.self_test().unwrap();
        assert_eq!(m.cached(), 0);
        assert_eq!(m.minted.load(std::sync::atomic::Ordering::Relaxed), 0);

        // A CA restricted to DNS subtrees still passes (the test name is an IP literal).
        let constrained = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            permitted_dns: vec!["corp.example".into()],
            ..InitOptions::default()
        };
        let ca = init(constrained.path(), &opts).unwrap();
        Minter::new(Arc::new(ca), Duration::from_secs(86400), 10)
            .self_test()
            .unwrap();

        // A CA whose validity ended yesterday loads (its key matches) but fails the test.
        let expired = tempfile::tempdir().unwrap();
        super::super::ca::write_expired_ca(expired.path());
        let ca = super::super::ca::load(expired.path()).unwrap();
        let err = Minter::new(Arc::new(ca), Duration::from_secs(86400), 10)
            .self_test()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid now"), "{err}");
    }

    #[test]
    fn a_leaf_ends_no_later_than_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let end = time::OffsetDateTime::now_utc() + time::Duration::days(2);
        super::super::ca::write_test_ca(dir.path(), end);
        let ca = Arc::new(super::super::ca::load(dir.path()).unwrap());
        let week = Minter::new(ca.clone(), Duration::from_secs(7 * 86400), 10);
        let (chain, _) = week.mint_leaf("x.test").unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        assert_eq!(leaf.validity().not_after.timestamp(), end.unix_timestamp());
        let hour = Minter::new(ca, Duration::from_secs(3600), 10);
        let (chain, _) = hour.mint_leaf("x.test").unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        assert!(leaf.validity().not_after.timestamp() < end.unix_timestamp() - 86400);
    }

    #[test]
    fn serials_are_random_and_positive() {
        let a = random_serial();
        let b = random_serial();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a.as_ref()[0] & 0x80 == 0);
    }
}

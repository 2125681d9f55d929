//! The crate's one rustls crypto provider (ring) and the client configuration that verifies
//! servers: upstream origins through the proxy, reputation servers through [`crate::client`]
//! (and with it `server.upstream` and the CLI).
//!
//! A leaf of the crate, beside [`crate::fsread`] (which reads the extra CA file). Every
//! rustls configuration is built with [`provider`], never with the process default, so the
//! choice of provider is made here alone; [`install_default`] also makes it the process
//! default for the libraries that ask for one. Exactly one provider is compiled in: a second
//! one (aws-lc-rs) in the dependency graph is refused by CI.
//!
//! Cost: the provider is built once per process and shared; [`client_config`] parses the
//! webpki root set and the extra CA file, so it runs at start and reload, never per request.
//! It fails with a message naming the CA file when that file cannot be read, holds no
//! certificate, or holds one rustls refuses as a root.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;

static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// The crypto provider every rustls configuration of the crate is built with.
pub fn provider() -> Arc<CryptoProvider> {
    PROVIDER.clone()
}

/// Makes [`provider`] the process default, for code that builds rustls configurations
/// without naming one (test clients, reqwest). A provider already installed stays.
pub fn install_default() {
    let _ = CryptoProvider::install_default(CryptoProvider::clone(&PROVIDER));
}

/// A client configuration that verifies servers against the webpki roots plus, when given,
/// the certificates of the PEM file `extra_ca` (a private CA). No client certificate, no
/// ALPN (the connector sets it).
///
/// # Errors
/// A message naming `extra_ca`: unreadable, no certificate in it, or a certificate that is
/// not a usable root.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for c in crate::fsread::pem_certs(path)? {
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_provider_and_clear_errors_for_a_bad_extra_ca() {
        assert!(Arc::ptr_eq(&provider(), &provider()));
        client_config(None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(Some(&missing)).unwrap_err();
        assert!(e.starts_with(&missing.display().to_string()), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }
}

//! The TLS client for `wss://` relays: rustls with ring, Mozilla's roots, plus the PEM
//! bundle named by `SOTTO_RELAY_CA` (for private relays and tests).

use std::sync::Arc;

use tokio_rustls::TlsConnector;

/// The environment variable naming extra trusted CA certificates (PEM).
pub const EXTRA_CA_ENV: &str = "SOTTO_RELAY_CA";

/// A connector trusting the web PKI and `SOTTO_RELAY_CA`.
pub fn connector() -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = std::env::var_os(EXTRA_CA_ENV) {
        let pem =
            std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.to_string_lossy()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("parsing {}: {e}", path.to_string_lossy()))?;
            roots.add(cert).map_err(|e| format!("adding a CA: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

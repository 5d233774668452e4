//! TLS for IMAP (IMAPS, RFC 8314 implicit TLS, and STARTTLS, RFC 9051 §6.2.1): the
//! server's certificate chain and private key (PEM files) loaded once at start into a
//! `rustls` server configuration.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::BoxError;

/// Loads `cert` (a PEM chain, leaf first) and `key` (a PEM private key: PKCS#8, PKCS#1 or
/// SEC1) into an acceptor. Every failure (a missing or unreadable file, no certificate in
/// it, a key that does not match the certificate) is an error naming the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, BoxError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert {}: no PEM certificate in it", cert.display()).into());
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    // The provider is named rather than taken from rustls's process default, which
    // depends on the crate features every dependency turns on.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "tls_cert {} / tls_key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

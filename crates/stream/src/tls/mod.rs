//! TLS for client streams (RFC 6120 section 5 for STARTTLS; XEP-0368 for direct TLS):
//! certificate loading, the self-signed certificate of the embedded default, and the
//! rustls acceptor with its one crypto provider (ring). Server-to-server TLS is in
//! [`s2s`].

pub mod s2s;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The self-signed certificate could not be generated or written.
    #[error("cannot create a self-signed certificate in {path}: {reason}")]
    Generate {
        /// Where it was to be written.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the certificate and key (for example a key that does not match).
    #[error("TLS configuration refused for {path}: {source}")]
    Rustls {
        /// The certificate file.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// File names of the generated certificate inside the data directory.
pub const SELF_SIGNED_CERT: &str = "self-signed-cert.pem";
/// File name of the generated key inside the data directory.
pub const SELF_SIGNED_KEY: &str = "self-signed-key.pem";

/// Return the paths of a self-signed certificate for `domains` in `dir`, generating it on
/// first use. An existing pair is reused, so clients that pinned it keep working.
pub fn ensure_self_signed(dir: &Path, domains: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join(SELF_SIGNED_CERT);
    let key_path = dir.join(SELF_SIGNED_KEY);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let fail = |reason: String| TlsError::Generate {
        path: dir.to_owned(),
        reason,
    };
    // The data directory holds the private key and the database: its owner's only.
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| fail(e.to_string()))?;
    let certified =
        rcgen::generate_simple_self_signed(domains.to_vec()).map_err(|e| fail(e.to_string()))?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    std::fs::write(&cert_path, certified.cert.pem()).map_err(|e| fail(e.to_string()))?;
    tracing::warn!(
        cert = %cert_path.display(),
        "generated a self-signed certificate; clients will ask their users to trust it"
    );
    Ok((cert_path, key_path))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Read a certificate chain (leaf first) and its private key from PEM files. The key may be
/// in the certificate file (MongooseIM's `certfile` holds both) when `keyfile` is the same
/// path.
pub fn load_identity(
    certfile: &Path,
    keyfile: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = CertificateDer::pem_file_iter(certfile)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            path: certfile.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
            path: certfile.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| TlsError::Pem {
        what: "private key",
        path: keyfile.to_owned(),
        reason: e.to_string(),
    })?;
    Ok((certs, key))
}

/// The one crypto provider (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build a TLS acceptor from PEM files: the certificate chain and its private key.
pub fn acceptor(certfile: &Path, keyfile: &Path) -> Result<TlsAcceptor, TlsError> {
    let (certs, key) = load_identity(certfile, keyfile)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|source| TlsError::Rustls {
            path: certfile.to_owned(),
            source,
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_generated_once_and_loads() {
        let dir = std::env::temp_dir().join(format!("herald-tls-test-{}", std::process::id()));
        let (cert, key) = ensure_self_signed(&dir, &["localhost".into()]).unwrap();
        let first = std::fs::read(&cert).unwrap();
        let (cert2, _) = ensure_self_signed(&dir, &["localhost".into()]).unwrap();
        assert_eq!(first, std::fs::read(cert2).unwrap());
        acceptor(&cert, &key).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_certificate_file_is_named_in_the_error() {
        let err = acceptor(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}

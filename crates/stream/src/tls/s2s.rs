//! TLS between servers (RFC 6120 section 5; RFC 6125 for the identity checks).
//!
//! A server link is encrypted whatever the peer's certificate: many federated servers use
//! self-signed certificates and authenticate with Server Dialback (XEP-0220) instead. So the
//! handshake itself accepts any certificate whose key signs the handshake (signatures are
//! checked), and the certificate's validity for a domain is judged afterwards by [`Trust`]:
//! a chain to a trusted root that names the domain (PKIX, RFC 6125 section 6) lets the
//! peer use SASL EXTERNAL (RFC 6120 section 6.3.4); anything else leaves it to dialback.

use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{TlsError, provider};

/// The TLS side of federation: the acceptor for incoming links (asking for, never requiring,
/// the peer's certificate), the connector for outgoing ones (presenting ours), and the roots
/// that decide which certificates are valid.
#[derive(Clone)]
pub struct S2sTls {
    /// For incoming streams (STARTTLS or direct TLS).
    pub acceptor: TlsAcceptor,
    /// For outgoing streams.
    pub connector: TlsConnector,
    /// Which peer certificates are valid for which domain.
    pub trust: Trust,
    /// Our own certificate chain, to judge whether a peer can accept it (SASL EXTERNAL is
    /// only worth trying with a certificate our own roots accept).
    own: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for S2sTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2sTls").finish_non_exhaustive()
    }
}

impl S2sTls {
    /// Build both sides from our certificate chain and key, and the trusted roots.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: RootCertStore,
        certfile: &Path,
    ) -> Result<S2sTls, TlsError> {
        let refused = |source| TlsError::Rustls {
            path: certfile.to_owned(),
            source,
        };
        let algorithms = provider().signature_verification_algorithms;
        let any = Arc::new(AnyCertificate { algorithms });
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(refused)?
            .with_client_cert_verifier(any.clone())
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(refused)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(refused)?
            .dangerous()
            .with_custom_certificate_verifier(any)
            .with_client_auth_cert(certs.clone(), key)
            .map_err(refused)?;
        Ok(S2sTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            trust: Trust::new(roots),
            own: certs,
        })
    }

    /// Whether our certificate is valid for `domain` by our own roots (a self-signed one is
    /// not): the condition for offering it as our identity with SASL EXTERNAL.
    pub fn own_certificate_valid_for(&self, domain: &str) -> bool {
        self.trust.valid_for(&self.own, domain)
    }
}

/// The trusted roots: the system's store (`system`) and the certificates of `cafile`.
pub fn roots(cafile: Option<&Path>, system: bool) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if system {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
    }
    if let Some(cafile) = cafile {
        let certs = CertificateDer::pem_file_iter(cafile)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::Pem {
                what: "CA certificate",
                path: cafile.to_owned(),
                reason: e.to_string(),
            })?;
        for cert in certs {
            roots.add(cert).map_err(|source| TlsError::Rustls {
                path: cafile.to_owned(),
                source,
            })?;
        }
    }
    Ok(roots)
}

/// Judges a peer's certificate chain for a domain: PKIX path to a trusted root, validity
/// dates, and the domain among the certificate's DNS names (RFC 6125 section 6.4; wildcards
/// in the leftmost label only).
#[derive(Clone)]
pub struct Trust {
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl Trust {
    /// Trust `roots`; with no roots, no certificate is ever valid.
    pub fn new(roots: RootCertStore) -> Trust {
        let verifier = (!roots.is_empty())
            .then(|| {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .ok()
            })
            .flatten();
        Trust { verifier }
    }

    /// Whether `chain` (leaf first) is a valid certificate for `domain`.
    pub fn valid_for(&self, chain: &[CertificateDer<'static>], domain: &str) -> bool {
        let (Some(verifier), Some((leaf, intermediates))) = (&self.verifier, chain.split_first())
        else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain.to_owned()) else {
            return false;
        };
        verifier
            .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
            .is_ok()
    }
}

/// Accepts any certificate during the handshake, but checks that the peer holds its key
/// (the handshake signatures); validity is [`Trust`]'s to judge afterwards.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for AnyCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    // The handshake signatures are checked as for a server's certificate.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ServerCertVerifier::supported_verify_schemes(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_and_leaf(domain: &str) -> (RootCertStore, Vec<CertificateDer<'static>>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![domain.to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &rcgen::Issuer::new(ca, ca_key))
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        (roots, vec![leaf.der().clone()])
    }

    #[test]
    fn a_certificate_from_a_trusted_ca_is_valid_only_for_the_domains_it_names() {
        let (roots, chain) = ca_and_leaf("a.example");
        let trust = Trust::new(roots);
        assert!(trust.valid_for(&chain, "a.example"));
        assert!(!trust.valid_for(&chain, "b.example"));
        assert!(!trust.valid_for(&[], "a.example"));
    }

    #[test]
    fn a_self_signed_certificate_is_not_valid_without_its_root() {
        let (_, chain) = ca_and_leaf("a.example");
        let (other_roots, _) = ca_and_leaf("a.example");
        assert!(!Trust::new(other_roots).valid_for(&chain, "a.example"));
        assert!(!Trust::new(RootCertStore::empty()).valid_for(&chain, "a.example"));
    }
}

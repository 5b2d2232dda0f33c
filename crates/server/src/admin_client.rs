//! The command line's side of the admin API (`herald push ...`, `herald session ...`, and
//! `herald user remove` while the server runs): requests to the first `[[listen.http]]` with
//! a `mongoose_admin_api`, with its token, over TLS when that listener has it (trusting the
//! listener's own certificate file, so a self-signed one works).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::config::{AdminApi, Config, HttpListener};

/// How long a command waits for the server (a test push waits for the app server too).
const TIMEOUT: Duration = Duration::from_secs(40);

/// Where and how to reach the admin API.
pub struct AdminClient {
    addr: SocketAddr,
    listener: HttpListener,
    admin: AdminApi,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server answered at the API's address (or it broke off).
    #[error("{0}")]
    Unreachable(String),
    /// The configuration has no admin API, or its TLS files are unusable.
    #[error("{0}")]
    Setup(String),
}

/// What a request came back with.
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body (`Null` if none or not JSON).
    pub body: Value,
}

impl Answer {
    /// The body's `error`, or the status.
    pub fn problem(&self) -> String {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| self.status.to_string(), str::to_owned)
    }
}

impl AdminClient {
    /// The admin API the configuration serves, if any.
    pub fn of(config: &Config) -> Option<AdminClient> {
        config.listen.http.iter().find_map(|listener| {
            let admin = listener.admin.clone()?;
            let ip = match listener.addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            Some(AdminClient {
                addr: SocketAddr::new(ip, listener.addr.port()),
                listener: listener.clone(),
                admin,
            })
        })
    }

    /// The admin API of `config`, or a configuration error saying how to get one.
    pub fn required(config: &Config) -> Result<AdminClient, ClientError> {
        AdminClient::of(config).ok_or_else(|| {
            ClientError::Setup(
                "this command talks to the running server's admin API, and the configuration has none: add a [[listen.http]] with [[listen.http.handlers.mongoose_admin_api]] (docs/operations.md)".to_owned(),
            )
        })
    }

    /// `method` on `path` (under the API's path); `Err(Unreachable)` when no server answers.
    pub async fn request(&self, method: Method, path: &str) -> Result<Answer, ClientError> {
        tokio::time::timeout(TIMEOUT, self.request_now(method, path))
            .await
            .map_err(|_| {
                ClientError::Unreachable(format!("{} did not answer in time", self.addr))
            })?
    }

    async fn request_now(&self, method: Method, path: &str) -> Result<Answer, ClientError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            ClientError::Unreachable(format!("cannot reach the admin API at {}: {e}", self.addr))
        };
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| unreachable(&e))?;
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.admin.path))
            .header(hyper::header::HOST, self.addr.to_string())
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.admin.token),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::Setup(format!("cannot build the request: {e}")))?;
        let response = match &self.listener.tls {
            Some(files) => {
                let connector = connector(files)?;
                let name = rustls_pki_types::ServerName::IpAddress(self.addr.ip().into());
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| unreachable(&e))?;
                send(stream, request).await
            }
            None => send(stream, request).await,
        }
        .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }
}

async fn send<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    sender.send_request(request).await
}

/// A TLS client that accepts exactly the listener's own certificate (the leaf of its
/// `tls.certfile`): the command runs beside the server and reads the same file, so a
/// self-signed certificate or one without an IP address works, and no other does.
fn connector(files: &crate::config::CertFiles) -> Result<tokio_rustls::TlsConnector, ClientError> {
    let (certs, _) = herald_stream::tls::load_identity(&files.certfile, &files.keyfile)
        .map_err(|e| ClientError::Setup(e.to_string()))?;
    let provider = herald_stream::tls::provider();
    let verifier = Arc::new(Pinned {
        leaf: certs[0].clone(),
        provider: Arc::clone(&provider),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts one certificate, byte for byte, and checks the handshake's signatures with it.
#[derive(Debug)]
struct Pinned {
    leaf: rustls_pki_types::CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A JID (or a node, a resource) for a URL path segment or query value: RFC 3986's
/// unreserved characters and `@` stand as they are, everything else is percent-encoded.
pub fn segment(text: &str) -> String {
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'@');
    utf8_percent_encode(text, SEGMENT).to_string()
}

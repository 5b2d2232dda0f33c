//! [`MongoosePush`]: the HTTP/1.1 client of the push service, over hyper with rustls (ring).
//!
//! Connections are kept alive and reused (at most `max_http_connections` idle ones are kept);
//! at most `max_http_connections` requests are in flight, the others wait for a slot; each
//! request, connection and TLS handshake included, is bounded by `request_timeout`. An
//! `https://` service is verified against the system's roots, or against
//! `tls.cacertfile` alone when it is set.

use std::{error::Error as _, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use tokio::sync::Semaphore;

use super::{
    ApiVersion, HttpOutcome, HttpPush, HttpTls, MongoosePushConfig, Notification, VerifyMode,
};

/// How long an idle keep-alive connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The most of a reply's body that is read (and thrown away) so that its connection can be
/// reused; a longer body closes the connection instead.
pub const MAX_REPLY_BODY: usize = 64 * 1024;

/// Why the client cannot be built from its configuration (start-up errors).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A certificate or key file cannot be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// No root certificate to verify the service with.
    #[error("no trusted CA certificates: the system has none; set connection.tls.cacertfile")]
    NoRoots,
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
}

/// The MongoosePush client of one `[outgoing_pools.http.NAME]` pool.
pub struct MongoosePush {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    prefix: String,
    api_version: ApiVersion,
    timeout: Duration,
    slots: Semaphore,
}

impl MongoosePush {
    /// The client for `config`; reads the certificate files it names.
    pub fn new(config: &MongoosePushConfig) -> Result<MongoosePush, ClientError> {
        let pool = &config.pool;
        let tls = tls_config(&pool.tls, pool.base.https)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(pool.request_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let connections = config.max_http_connections.get();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        if pool.base.https && pool.tls.verify_mode == VerifyMode::None {
            tracing::warn!(pool = %pool.name, url = %pool.base, "tls.verify_mode = \"none\": the push service's certificate is not checked");
        }
        Ok(MongoosePush {
            client,
            base: pool.base.to_string(),
            prefix: pool.path_prefix.clone(),
            api_version: config.api_version,
            timeout: pool.request_timeout,
            slots: Semaphore::new(connections),
        })
    }

    /// POST the notification and read the reply's status; the body is drained (within
    /// [`MAX_REPLY_BODY`]) so that the connection can carry the next request.
    async fn send(&self, notification: &Notification) -> Result<HttpOutcome, String> {
        let uri = format!(
            "{}{}",
            self.base,
            notification.path(&self.prefix, self.api_version)
        );
        let request = http::Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(Full::new(notification.body.clone()))
            .map_err(|error| error.to_string())?;
        let response = self.client.request(request).await.map_err(|error| {
            // hyper's error says "client error (Connect)"; its sources say why.
            let mut message = error.to_string();
            let mut source = error.source();
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            message
        })?;
        let status = response.status().as_u16();
        // RFC 9110 section 10.2.3: delay-seconds (an HTTP date is not honoured).
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .filter(|_| matches!(status, 429 | 503))
            .map(std::time::Duration::from_secs);
        // A body that fails or is too long only costs the connection.
        let _ = Limited::new(response.into_body(), MAX_REPLY_BODY)
            .collect()
            .await;
        Ok(match retry_after {
            Some(after) => HttpOutcome::RetryAfter(status, after),
            None => HttpOutcome::Status(status),
        })
    }
}

#[async_trait::async_trait]
impl HttpPush for MongoosePush {
    fn api_version(&self) -> ApiVersion {
        self.api_version
    }

    async fn post(&self, notification: &Notification) -> HttpOutcome {
        // The semaphore is never closed.
        let Ok(_slot) = self.slots.acquire().await else {
            return HttpOutcome::Failed("the HTTP client has stopped".into());
        };
        match tokio::time::timeout(self.timeout, self.send(notification)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(message)) => HttpOutcome::Failed(message),
            Err(_) => HttpOutcome::Timeout,
        }
    }
}

/// The rustls settings for `tls`; the system's roots are loaded only for an `https` service
/// without `cacertfile`.
fn tls_config(tls: &HttpTls, https: bool) -> Result<ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match tls.verify_mode {
        VerifyMode::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider))),
        VerifyMode::Peer => builder.with_root_certificates(roots(tls, https)?),
    };
    let config = match &tls.client_cert {
        Some((certfile, keyfile)) => {
            let chain = certificates(certfile)?;
            let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|error| ClientError::File {
                path: keyfile.clone(),
                message: format!("no private key: {error}"),
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The roots to verify the service with.
fn roots(tls: &HttpTls, https: bool) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    if let Some(cacertfile) = &tls.cacertfile {
        for certificate in certificates(cacertfile)? {
            roots.add(certificate).map_err(|error| ClientError::File {
                path: cacertfile.clone(),
                message: format!("not a usable CA certificate: {error}"),
            })?;
        }
    } else if https {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "reading the system's CA certificates");
        }
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(ClientError::NoRoots);
        }
    }
    Ok(roots)
}

/// The PEM certificates in `path`; at least one.
fn certificates(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let file_error = |message: String| ClientError::File {
        path: path.clone(),
        message,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(format!("cannot read: {error}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(format!("not PEM certificates: {error}")))?;
    if certificates.is_empty() {
        return Err(file_error("holds no PEM certificate".into()));
    }
    Ok(certificates)
}

/// `verify_mode = "none"`: any certificate is accepted, but handshake signatures are still
/// checked (the connection is encrypted, not authenticated).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! A local HTTP/1.1 push service for black-box tests: MongoosePush as herald sees it.
//!
//! A real server on 127.0.0.1:0 (hyper's HTTP/1.1 connection with keep-alive, over plain TCP
//! or over TLS with a leaf certificate for `localhost` signed by a test CA generated here). It
//! records every request, counts accepted TCP connections, and answers with a status the test
//! chooses, or holds requests unanswered ("hang") until released, or drops connections
//! without answering ("refuse").

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode, body::Incoming, header, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinHandle,
};

/// One request as the service received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path and query, e.g. `/v3/notification/DEVICE`.
    pub path: String,
    /// Every header, names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Null` when it is not JSON.
    pub body: serde_json::Value,
    /// The body as text.
    pub raw_body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The media type of `content-type`, without parameters, lowercased.
    pub fn media_type(&self) -> Option<String> {
        self.header("content-type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
    }

    /// The last path segment: the device id of a notification path.
    pub fn device(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }
}

struct Shared {
    default_status: AtomicU16,
    by_path: Mutex<HashMap<String, u16>>,
    /// While `true`, requests are recorded and then held unanswered.
    hang: watch::Sender<bool>,
    /// While `true`, accepted connections are closed at once, before any request is read.
    refuse: AtomicBool,
    connections: watch::Sender<usize>,
    /// Requests recorded and not yet answered (held by hang mode), whose connection is open.
    pending: AtomicUsize,
    requests: mpsc::UnboundedSender<Recorded>,
}

impl Shared {
    fn status_for(&self, path: &str) -> u16 {
        self.by_path
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or_else(|| self.default_status.load(Ordering::SeqCst))
    }
}

/// Decrements the pending count when a held request is answered or abandoned.
struct PendingGuard(Arc<Shared>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The running service; stops when dropped.
pub struct PushService {
    addr: SocketAddr,
    tls: bool,
    ca_file: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedReceiver<Recorded>,
    /// Requests seen by a negative check, kept for the next read.
    buffered: VecDeque<Recorded>,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl PushService {
    /// Plain HTTP; [`PushService::url`] is `http://127.0.0.1:PORT`.
    pub async fn plain() -> PushService {
        PushService::start(None).await
    }

    /// HTTPS with a certificate for `localhost` (and 127.0.0.1) signed by a fresh test CA,
    /// whose certificate is at [`PushService::ca_file`]; the URL is `https://localhost:PORT`.
    pub async fn tls() -> PushService {
        let dir = tempfile::tempdir().unwrap();
        let (config, ca_pem) = tls_config();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let mut service = PushService::start(Some(tokio_rustls::TlsAcceptor::from(config))).await;
        service.ca_file = Some(ca_file);
        service._dir = Some(dir);
        service
    }

    async fn start(acceptor: Option<tokio_rustls::TlsAcceptor>) -> PushService {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            default_status: AtomicU16::new(200),
            by_path: Mutex::new(HashMap::new()),
            hang: watch::Sender::new(false),
            refuse: AtomicBool::new(false),
            connections: watch::Sender::new(0),
            pending: AtomicUsize::new(0),
            requests: requests_tx,
        });
        let stop = watch::Sender::new(false);
        let tls = acceptor.is_some();
        let accept = tokio::spawn(accept_loop(
            listener,
            acceptor,
            shared.clone(),
            stop.subscribe(),
        ));
        PushService {
            addr,
            tls,
            ca_file: None,
            _dir: None,
            shared,
            requests,
            buffered: VecDeque::new(),
            stop,
            accept,
        }
    }

    /// The base URL for `connection.host`.
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://127.0.0.1:{}", self.addr.port())
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The test CA's certificate (PEM), for `connection.tls.cacertfile`; `None` for plain HTTP.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The next request, or `None` if none arrives within `wait`.
    pub async fn next_request(&mut self, wait: Duration) -> Option<Recorded> {
        if let Some(request) = self.buffered.pop_front() {
            return Some(request);
        }
        tokio::time::timeout(wait, self.requests.recv())
            .await
            .ok()
            .flatten()
    }

    /// Whether no request arrives within `wait` (one that does is kept for the next read).
    pub async fn nothing_within(&mut self, wait: Duration) -> bool {
        match self.next_request(wait).await {
            None => true,
            Some(request) => {
                self.buffered.push_front(request);
                false
            }
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.shared.connections.borrow()
    }

    /// Whether at least `n` TCP connections were accepted within `wait`.
    pub async fn wait_for_connections(&self, n: usize, wait: Duration) -> bool {
        let mut seen = self.shared.connections.subscribe();
        tokio::time::timeout(wait, seen.wait_for(|count| *count >= n))
            .await
            .is_ok()
    }

    /// Requests received and held unanswered right now.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }

    /// The status of every later answer (200 at start), unless a path has its own.
    pub fn set_status(&self, status: u16) {
        self.shared.default_status.store(status, Ordering::SeqCst);
    }

    /// The status of later answers to requests for exactly this path.
    pub fn set_status_for(&self, path: &str, status: u16) {
        self.shared
            .by_path
            .lock()
            .unwrap()
            .insert(path.to_owned(), status);
    }

    /// Hold every later request unanswered (`true`), or answer held and later requests
    /// (`false`).
    pub fn hang(&self, on: bool) {
        self.shared.hang.send_replace(on);
    }

    /// Close every later connection as soon as it is accepted, without reading or answering.
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        shared.connections.send_modify(|count| *count += 1);
        if shared.refuse.load(Ordering::SeqCst) {
            drop(tcp);
            continue;
        }
        let shared = shared.clone();
        let stop = stop.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve(tcp, shared, stop).await,
                Some(acceptor) => {
                    // A client that rejects the certificate ends here.
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, shared, stop).await;
                    }
                }
            }
        });
    }
}

async fn serve<T>(io: T, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler_stop = stop.clone();
    let service = service_fn(move |request| handle(shared.clone(), handler_stop.clone(), request));
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = connection => {}
        _ = stop.wait_for(|stop| *stop) => {}
    }
}

async fn handle(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let recorded = Recorded {
        method: parts.method.as_str().to_owned(),
        path: path.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        raw_body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    let hang = *shared.hang.borrow();
    let guard = hang.then(|| {
        shared.pending.fetch_add(1, Ordering::SeqCst);
        PendingGuard(shared.clone())
    });
    // Counted as pending before the test can see it.
    let _ = shared.requests.send(recorded);
    if guard.is_some() {
        let mut released = shared.hang.subscribe();
        tokio::select! {
            _ = async { released.wait_for(|hang| !*hang).await.map(|_| ()) } => {}
            _ = async { stop.wait_for(|stop| *stop).await.map(|_| ()) } => {}
        }
    }
    drop(guard);
    let status = StatusCode::from_u16(shared.status_for(&path)).unwrap();
    let response = if status.is_success() {
        // MongoosePush answers success with an empty body.
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .unwrap()
    } else {
        let reason = if status == StatusCode::GONE {
            "unregistered"
        } else {
            "internal_config"
        };
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(format!(
                "{{\"reason\":\"{reason}\"}}"
            ))))
            .unwrap()
    };
    Ok(response)
}

/// A server configuration with a `localhost` certificate signed by a new CA, and the CA's
/// certificate as PEM.
fn tls_config() -> (Arc<rustls::ServerConfig>, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "herald test push CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(config), ca_cert.pem())
}

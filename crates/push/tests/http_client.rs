//! The MongoosePush client against a real HTTP/1.1 server on 127.0.0.1 (hyper's server side):
//! what goes on the wire, keep-alive reuse, timeouts, refused connections and the bound on
//! requests in flight.

use std::{
    convert::Infallible,
    net::SocketAddr,
    num::NonZeroUsize,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use herald_push::mongoosepush::{
    ApiVersion, BaseUrl, HttpOutcome, HttpPool, HttpPush, HttpTls, MongoosePush,
    MongoosePushConfig, Notification,
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::Notify};

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Bytes,
}

/// A plain HTTP server answering `status`, or never answering when `hang` is set.
struct Service {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
}

impl Service {
    async fn start(status: u16, hang: bool) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(Notify::new());
        let (seen2, connections2, arrived2) = (seen.clone(), connections.clone(), arrived.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                connections2.fetch_add(1, Ordering::SeqCst);
                let (seen, arrived) = (seen2.clone(), arrived2.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    let (seen, arrived) = (seen.clone(), arrived.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        seen.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_owned(),
                            content_type: parts
                                .headers
                                .get("content-type")
                                .map(|v| v.to_str().unwrap().to_owned()),
                            body,
                        });
                        arrived.notify_one();
                        if hang {
                            std::future::pending::<()>().await;
                        }
                        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        // Read only with 429 and 503 (RFC 9110 section 10.2.3).
                        response
                            .headers_mut()
                            .insert("retry-after", hyper::header::HeaderValue::from_static("12"));
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Service {
            addr,
            seen,
            connections,
            arrived,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn config(addr: SocketAddr, connections: usize, timeout: Duration) -> MongoosePushConfig {
    MongoosePushConfig {
        api_version: ApiVersion::V3,
        max_http_connections: NonZeroUsize::new(connections).unwrap(),
        pool: HttpPool {
            name: "test".into(),
            base: BaseUrl::parse(&format!("http://{addr}")).unwrap(),
            path_prefix: "/push/".into(),
            request_timeout: timeout,
            tls: HttpTls::default(),
        },
    }
}

fn notification(device: &str) -> Notification {
    Notification {
        device_id: device.into(),
        body: Bytes::from_static(br#"{"service":"fcm"}"#),
    }
}

#[tokio::test]
async fn a_notification_is_posted_as_json_to_the_versioned_path() {
    let service = Service::start(200, false).await;
    let client = MongoosePush::new(&config(service.addr, 4, Duration::from_secs(5))).unwrap();
    assert_eq!(
        client.post(&notification("D1")).await,
        HttpOutcome::Status(200)
    );
    let seen = service.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/push/v3/notification/D1");
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(&seen[0].body[..], br#"{"service":"fcm"}"#);
}

#[tokio::test]
async fn a_429_or_503_with_retry_after_says_how_long_to_wait_and_other_statuses_do_not() {
    for (status, expected) in [
        (429, HttpOutcome::RetryAfter(429, Duration::from_secs(12))),
        (503, HttpOutcome::RetryAfter(503, Duration::from_secs(12))),
        (500, HttpOutcome::Status(500)),
    ] {
        let service = Service::start(status, false).await;
        let client = MongoosePush::new(&config(service.addr, 4, Duration::from_secs(5))).unwrap();
        assert_eq!(client.post(&notification("D1")).await, expected);
    }
}

#[tokio::test]
async fn sequential_notifications_reuse_one_keep_alive_connection() {
    let service = Service::start(410, false).await;
    let client = MongoosePush::new(&config(service.addr, 4, Duration::from_secs(5))).unwrap();
    for device in ["a", "b", "c", "d"] {
        assert_eq!(
            client.post(&notification(device)).await,
            HttpOutcome::Status(410)
        );
    }
    assert_eq!(service.seen().len(), 4);
    assert_eq!(service.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_service_that_never_answers_times_out() {
    let service = Service::start(200, true).await;
    let client = MongoosePush::new(&config(service.addr, 4, Duration::from_millis(300))).unwrap();
    assert_eq!(client.post(&notification("D1")).await, HttpOutcome::Timeout);
    assert_eq!(service.seen().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_failure_with_its_reason() {
    // A port that was just free: nothing listens there.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = MongoosePush::new(&config(addr, 4, Duration::from_secs(5))).unwrap();
    match client.post(&notification("D1")).await {
        HttpOutcome::Failed(reason) => assert!(reason.contains("onnect"), "{reason}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn at_most_max_http_connections_requests_are_in_flight() {
    let service = Service::start(200, true).await;
    let client =
        Arc::new(MongoosePush::new(&config(service.addr, 2, Duration::from_secs(30))).unwrap());
    let mut posts = Vec::new();
    for device in ["a", "b", "c", "d"] {
        let client = client.clone();
        posts.push(tokio::spawn(async move {
            client.post(&notification(device)).await
        }));
    }
    // Two requests arrive; the other two wait for a slot, however long we look.
    service.arrived.notified().await;
    service.arrived.notified().await;
    let third = tokio::time::timeout(Duration::from_millis(500), service.arrived.notified()).await;
    assert!(third.is_err(), "a third request arrived");
    assert_eq!(service.seen().len(), 2);
    for post in posts {
        post.abort();
    }
}

#[tokio::test]
async fn an_https_service_with_an_untrusted_certificate_is_refused() {
    // A TLS server whose certificate no configured CA signed: the handshake fails.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_ca = rcgen::generate_simple_self_signed(vec!["ca.invalid".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, other_ca.cert.pem()).unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = acceptor.accept(stream).await;
        }
    });
    let mut config = config(addr, 2, Duration::from_secs(5));
    config.pool.base = BaseUrl::parse(&format!("https://localhost:{}", addr.port())).unwrap();
    config.pool.tls.cacertfile = Some(ca_file);
    let client = MongoosePush::new(&config).unwrap();
    match client.post(&notification("D1")).await {
        HttpOutcome::Failed(reason) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

//! Client-to-server streams (RFC 6120): the listener, stream negotiation (STARTTLS, SASL,
//! resource binding) and the bound session loop.

mod negotiate;
mod session;
pub mod throttle;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::Server;

/// How a listener uses TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS offered (RFC 6120 section 5), not required.
    StartTls,
    /// STARTTLS offered and required before authentication (RFC 6120 section 5.3.1).
    StartTlsRequired,
    /// TLS from the first byte (XEP-0368).
    DirectTls,
}

/// TLS settings of a listener.
#[derive(Clone)]
pub struct C2sTls {
    /// How TLS is negotiated.
    pub mode: TlsMode,
    /// The rustls acceptor with the certificate.
    pub acceptor: TlsAcceptor,
}

/// One `[[listen.c2s]]` listener, ready to run.
#[derive(Clone)]
pub struct C2sSettings {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Largest first-level element accepted (policy-violation above it).
    pub max_stanza_size: usize,
    /// Connections served at once; more are refused with resource-constraint.
    pub max_connections: usize,
    /// How long an unauthenticated stream may stay silent (connection-timeout after it).
    pub state_timeout: Duration,
    /// Offer the RFC 3921 `<session/>` feature to old clients.
    pub backwards_compatible_session: bool,
    /// How long a write may wait for the client to read (`send_timeout`); a client that
    /// takes nothing for this long is dropped (its session waits for resumption or ends,
    /// and what it held is kept).
    pub send_timeout: Duration,
    /// How long the whole negotiation (TLS, SASL, binding) may take, however busy the
    /// client keeps it (`handshake_timeout`); `state_timeout` bounds each wait within it.
    pub handshake_timeout: Duration,
    /// Connections held at once from one IP address (`max_connections_per_ip`); more are
    /// refused with resource-constraint.
    pub max_connections_per_ip: usize,
    /// `None` is a plaintext listener.
    pub tls: Option<C2sTls>,
}

/// TCP keepalive on a client socket: a peer that vanished without a FIN (a phone out of
/// coverage) is found by the kernel after about 90 s of silence (60 s idle, then 3 probes
/// 10 s apart), and data it never acknowledges aborts the connection after 90 s
/// (`TCP_USER_TIMEOUT`), even while the server has nothing else to say.
fn keepalive(tcp: &tokio::net::TcpStream) {
    let socket = socket2::SockRef::from(tcp);
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    if let Err(error) = socket.set_tcp_keepalive(&probes) {
        tracing::debug!(%error, "cannot set TCP keepalive");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(error) = socket.set_tcp_user_timeout(Some(Duration::from_secs(90))) {
        tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT");
    }
}

/// Connections per IP address, bounded.
struct PerIp {
    max: usize,
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection counted against its address until dropped.
struct IpPermit {
    per_ip: Arc<PerIp>,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn new(max: usize) -> PerIp {
        PerIp {
            max,
            counts: Default::default(),
        }
    }

    fn acquire(per_ip: &Arc<PerIp>, ip: std::net::IpAddr) -> Option<IpPermit> {
        let mut counts = per_ip.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= per_ip.max {
            return None;
        }
        *count += 1;
        Some(IpPermit {
            per_ip: Arc::clone(per_ip),
            ip,
        })
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut counts = self.per_ip.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A bound c2s listener.
pub struct C2sListener {
    listener: TcpListener,
    settings: Arc<C2sSettings>,
}

impl C2sListener {
    /// Bind the socket (so start-up fails early on an address in use).
    pub async fn bind(settings: C2sSettings) -> std::io::Result<C2sListener> {
        let listener = TcpListener::bind(settings.addr).await?;
        if settings.tls.is_none() {
            tracing::warn!(addr = %settings.addr, "c2s listener without TLS: passwords and messages travel in clear text");
        }
        Ok(C2sListener {
            listener,
            settings: Arc::new(settings),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept connections until the server shuts down.
    pub async fn run(self, server: Arc<Server>) {
        let limit = Arc::new(Semaphore::new(self.settings.max_connections));
        let per_ip = Arc::new(PerIp::new(self.settings.max_connections_per_ip));
        let addr = self.local_addr().ok();
        tracing::info!(?addr, "c2s listener accepting");
        while let Some((tcp, peer)) = crate::conn::accept(&self.listener, &server, "c2s").await {
            keepalive(&tcp);
            let permit = Arc::clone(&limit).try_acquire_owned();
            let ip_permit = PerIp::acquire(&per_ip, peer.ip());
            let server2 = Arc::clone(&server);
            let settings = Arc::clone(&self.settings);
            server.tasks.spawn(async move {
                let _open = crate::metrics::Connection::open("c2s");
                match (permit, ip_permit) {
                    (Ok(_permit), Some(_ip_permit)) => {
                        negotiate::serve(server2, settings, tcp, peer).await;
                    }
                    _ => negotiate::refuse(server2, settings, tcp, peer).await,
                }
            });
        }
        tracing::info!(?addr, "c2s listener stopped");
    }
}

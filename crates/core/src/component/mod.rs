//! External components (XEP-0114, the "jabber:component:accept" protocol): the listener,
//! the handshake, and the connected component's loop.
//!
//! A component opens a stream to the domain it wants to serve, proves it knows the shared
//! secret with `<handshake>hex(SHA-1(stream id + secret))</handshake>` (XEP-0114 section 3),
//! and from then on the domain and every JID at it are routed to it. Its stanzas are
//! moved into `jabber:client` at the edge so the rest of the server sees one namespace,
//! and moved back when written to it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use herald_stream::{
    Frame, StreamErrorCondition, StreamHeader, ns, stanza::with_namespace, transport::Transport,
};
use jid::{DomainPart, Jid};
use minidom::Element;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{
    Origin, Server,
    components::{ComponentHandle, ConflictBehaviour},
    conn::{Conn, ReadError, Rejected, parse_stanza, read_error_condition},
};

/// XEP-0114 section 3: the content namespace of component streams.
pub const COMPONENT_NS: &str = ns::COMPONENT;

/// One `[[listen.service]]` listener, ready to run.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// Address to bind.
    pub addr: SocketAddr,
    /// The shared secret.
    pub password: String,
    /// What a second component for a connected domain gets.
    pub conflict_behaviour: ConflictBehaviour,
    /// Largest first-level element accepted.
    pub max_stanza_size: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long the handshake may take.
    pub state_timeout: Duration,
    /// Refuse stanzas whose `from` is not at the component's domain (MongooseIM's
    /// `check_from`).
    pub check_from: bool,
    /// Keep the component's domain out of the server's disco#items.
    pub hidden_components: bool,
}

/// A bound component listener.
pub struct ServiceListener {
    listener: TcpListener,
    settings: Arc<ServiceSettings>,
}

impl ServiceListener {
    /// Bind the socket.
    pub async fn bind(settings: ServiceSettings) -> std::io::Result<ServiceListener> {
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(ServiceListener {
            listener,
            settings: Arc::new(settings),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept components until shutdown.
    pub async fn run(self, server: Arc<Server>) {
        let limit = Arc::new(Semaphore::new(self.settings.max_connections));
        while let Some((tcp, peer)) =
            crate::conn::accept(&self.listener, &server, "component").await
        {
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                tracing::warn!(%peer, "component connection limit reached; refusing");
                continue;
            };
            let server2 = Arc::clone(&server);
            let settings = Arc::clone(&self.settings);
            server.tasks.spawn(async move {
                let _permit = permit;
                let _open = crate::metrics::Connection::open("component");
                serve(server2, settings, tcp, peer).await;
            });
        }
    }
}

/// `hex(SHA-1(stream id + secret))`, lowercase (XEP-0114 section 3).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let digest = Sha1::new_with_prefix(stream_id.as_bytes())
        .chain_update(secret.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(
    server: Arc<Server>,
    settings: Arc<ServiceSettings>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let mut conn = Conn::new(Transport::Plain(tcp), settings.max_stanza_size)
        .with_content_namespace(COMPONENT_NS);
    let Some((handle, rx)) = handshake(&server, &settings, &mut conn).await else {
        return;
    };
    tracing::info!(domain = %handle.domain, %peer, "component connected");
    let end = run(&server, &settings, &mut conn, &handle, rx).await;
    server.components.unregister(&handle.domain, handle.id);
    match end {
        Some(condition) => conn.fail(condition, handle.domain.as_str()).await,
        None => {
            conn.queue_raw("</stream:stream>");
            conn.close().await;
        }
    }
    tracing::info!(domain = %handle.domain, "component disconnected");
}

async fn read(conn: &mut Conn, timeout: Duration, domain: &str, server: &Server) -> Option<Frame> {
    let result = tokio::select! {
        result = tokio::time::timeout(timeout, conn.next_frame()) => result,
        _ = server.shutdown.cancelled() => {
            conn.fail(StreamErrorCondition::SystemShutdown, domain).await;
            return None;
        }
    };
    match result {
        Ok(Ok(frame)) => Some(frame),
        Ok(Err(error)) => {
            if let Some(condition) = read_error_condition(&error) {
                conn.fail(condition, domain).await;
            }
            None
        }
        Err(_) => {
            conn.fail(StreamErrorCondition::ConnectionTimeout, domain)
                .await;
            None
        }
    }
}

/// The stream header and the handshake; registers the component on success.
async fn handshake(
    server: &Server,
    settings: &ServiceSettings,
    conn: &mut Conn,
) -> Option<(ComponentHandle, crate::queue::Inbox)> {
    let header = match read(conn, settings.state_timeout, "", server).await? {
        Frame::StreamOpen(header) => header,
        _ => return None,
    };
    let domain = header
        .to
        .as_deref()
        .and_then(|to| DomainPart::new(to).ok())
        .map(|d| Jid::from(jid::BareJid::from_parts(None, &d)));
    let Some(domain) = domain else {
        // XEP-0114 section 3: the component names its domain in `to`.
        conn.fail(
            StreamErrorCondition::HostUnknown,
            header.to.as_deref().unwrap_or_default(),
        )
        .await;
        return None;
    };
    let stream_id = crate::random_id();
    let opening = StreamHeader::component_response(COMPONENT_NS, domain.as_str(), &stream_id);
    conn.queue_raw(&opening);
    conn.header_sent = true;
    if server.is_local_domain(domain.as_str()) {
        // A served domain cannot be taken over by a component.
        conn.fail(StreamErrorCondition::Conflict, domain.as_str())
            .await;
        return None;
    }
    if conn.flush().await.is_err() {
        return None;
    }
    let element = match read(conn, settings.state_timeout, domain.as_str(), server).await? {
        Frame::Element(element) => element,
        _ => return None,
    };
    if !element.is("handshake", COMPONENT_NS) {
        conn.fail(StreamErrorCondition::NotAuthorized, domain.as_str())
            .await;
        return None;
    }
    let expected = handshake_digest(&stream_id, &settings.password);
    let given = element.text().trim().to_ascii_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        // XEP-0114 section 3: a wrong handshake is a not-authorized stream error.
        tracing::warn!(domain = %domain, "component handshake failed");
        conn.fail(StreamErrorCondition::NotAuthorized, domain.as_str())
            .await;
        return None;
    }
    let (handle, rx) = ComponentHandle::new(domain.clone(), !settings.hidden_components);
    if server
        .components
        .register(handle.clone(), settings.conflict_behaviour)
        .is_err()
    {
        tracing::warn!(domain = %domain, "a component for this domain is already connected");
        conn.fail(StreamErrorCondition::Conflict, domain.as_str())
            .await;
        return None;
    }
    // XEP-0114 section 3: an empty handshake in the stream's content namespace.
    conn.queue(&Element::bare("handshake", COMPONENT_NS));
    if conn.flush().await.is_err() {
        server.components.unregister(&handle.domain, handle.id);
        return None;
    }
    Some((handle, rx))
}

/// The connected component: stanzas both ways until one side ends the stream. Returns the
/// stream error to send, or `None` for a clean close.
async fn run(
    server: &Server,
    settings: &ServiceSettings,
    conn: &mut Conn,
    handle: &ComponentHandle,
    mut rx: crate::queue::Inbox,
) -> Option<StreamErrorCondition> {
    loop {
        tokio::select! {
            biased;
            _ = server.shutdown.cancelled() => return Some(StreamErrorCondition::SystemShutdown),
            reason = handle.control.closed() => return Some(reason),
            outbound = rx.recv() => {
                let first = outbound?;
                // What modules recorded about a stanza stays with herald.
                conn.queue_moving(&first.stanza, ns::CLIENT, COMPONENT_NS);
                while let Some(next) = rx.try_recv() {
                    conn.queue_moving(&next.stanza, ns::CLIENT, COMPONENT_NS);
                }
                if conn.flush().await.is_err() {
                    return None;
                }
            }
            frame = conn.next_frame() => match frame {
                Ok(Frame::Element(element)) => {
                    if let Some(condition) = inbound(server, settings, conn, handle, element).await {
                        return Some(condition);
                    }
                }
                Ok(Frame::StreamClose) => return None,
                Ok(Frame::StreamOpen(_)) => return Some(StreamErrorCondition::NotWellFormed),
                Err(error) => {
                    if let ReadError::Io(error) = &error {
                        tracing::debug!(domain = %handle.domain, %error, "component read failed");
                    }
                    return read_error_condition(&error);
                }
            },
        }
    }
}

async fn inbound(
    server: &Server,
    settings: &ServiceSettings,
    conn: &mut Conn,
    handle: &ComponentHandle,
    element: Element,
) -> Option<StreamErrorCondition> {
    let element = with_namespace(element, COMPONENT_NS, ns::CLIENT);
    let stanza = match parse_stanza(element) {
        Ok(stanza) => stanza,
        Err(Rejected::Stream(condition)) => return Some(condition),
        Err(Rejected::Reply(None)) => return None,
        Err(Rejected::Reply(Some(reply))) => {
            conn.queue_moving(&reply, ns::CLIENT, COMPONENT_NS);
            return conn
                .flush()
                .await
                .err()
                .map(|_| StreamErrorCondition::InternalServerError);
        }
    };
    // XEP-0114 section 3.1 leaves addressing to the component, but `from` must be at its
    // own domain (RFC 6120 section 4.9.3.9, invalid-from), unless check_from is off.
    let from_ok = match &stanza.from {
        Some(from) => !settings.check_from || from.domain() == handle.domain.domain(),
        None => false,
    };
    if !from_ok {
        return Some(StreamErrorCondition::InvalidFrom);
    }
    server
        .route(Origin::Component(&handle.domain), stanza)
        .await;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_digest_is_lowercase_hex_sha1_of_id_and_secret() {
        // SHA-1("3BF96D75" + "secret") from the shape of XEP-0114 example 3.
        let digest = handshake_digest("3BF96D75", "secret");
        assert_eq!(digest.len(), 40);
        assert!(
            digest
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            handshake_digest("", "abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}

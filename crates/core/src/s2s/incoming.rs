//! Incoming server streams (`[[listen.s2s]]`): TLS, authentication of the peer's domains
//! (SASL EXTERNAL, RFC 6120 section 6.3.4 and XEP-0178; Server Dialback, XEP-0220), the
//! authoritative answers to `db:verify`, and the stanzas of authenticated domains.

use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};

use base64::Engine;
use herald_stream::{Frame, StreamErrorCondition, StreamHeader, ns, transport::Transport};
use jid::DomainPart;
use minidom::Element;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};

use super::{Pair, S2s, UseStartTls, dialback, inbound, is_ours, outgoing};
use crate::{
    Server,
    conn::{Conn, ReadError, read_error_condition},
};

/// One `[[listen.s2s]]` listener, ready to run.
#[derive(Clone, Debug)]
pub struct S2sListenerSettings {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Largest first-level element accepted.
    pub max_stanza_size: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a stream may take to authenticate a first domain.
    pub state_timeout: Duration,
    /// TLS from the first byte (XEP-0368) instead of STARTTLS.
    pub direct_tls: bool,
}

/// A bound server-to-server listener.
pub struct S2sListener {
    listener: TcpListener,
    settings: Arc<S2sListenerSettings>,
}

impl S2sListener {
    /// Bind the socket.
    pub async fn bind(settings: S2sListenerSettings) -> std::io::Result<S2sListener> {
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(S2sListener {
            listener,
            settings: Arc::new(settings),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept remote servers until shutdown.
    pub async fn run(self, server: Arc<Server>) {
        let limit = Arc::new(Semaphore::new(self.settings.max_connections));
        while let Some((tcp, peer)) = crate::conn::accept(&self.listener, &server, "s2s").await {
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                tracing::warn!(%peer, "s2s connection limit reached; refusing");
                continue;
            };
            let server2 = Arc::clone(&server);
            let settings = Arc::clone(&self.settings);
            server.tasks.spawn(async move {
                let _permit = permit;
                let _open = crate::metrics::Connection::open("s2s_in");
                serve(server2, settings, tcp, peer).await;
            });
        }
    }
}

/// What an incoming stream knows.
struct Incoming {
    /// Our stream id (dialback keys are bound to it).
    stream_id: String,
    /// The peer's domain from its stream header, if it gave one.
    peer_domain: Option<String>,
    /// Authenticated (remote, local) pairs.
    authenticated: HashSet<Pair>,
    /// SASL succeeded on this connection.
    sasl_done: bool,
    /// Dialback verifications in flight (each is a connection to another server).
    verifying: usize,
}

/// Dialback verifications one stream may have in flight: each opens a connection to the
/// claimed domain's server, so a peer cannot make herald open connections without bound.
const MAX_VERIFYING: usize = 8;

/// A dialback verification's outcome, sent back to the stream's task.
struct Verified {
    pair: Pair,
    valid: bool,
}

async fn serve(
    server: Arc<Server>,
    settings: Arc<S2sListenerSettings>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let Some(s2s) = server.s2s().cloned() else {
        return;
    };
    let transport = if settings.direct_tls {
        let Some(tls) = &s2s.tls else { return };
        match tokio::time::timeout(settings.state_timeout, tls.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Transport::Tls(Box::new(stream)),
            _ => {
                tracing::debug!(%peer, "s2s TLS handshake failed");
                return;
            }
        }
    } else {
        Transport::Plain(tcp)
    };
    let mut conn =
        Conn::new(transport, settings.max_stanza_size).with_content_namespace(ns::SERVER);
    let mut state = Incoming {
        stream_id: String::new(),
        peer_domain: None,
        authenticated: HashSet::new(),
        sasl_done: false,
        verifying: 0,
    };
    let (verified_tx, mut verified_rx) = mpsc::channel::<Verified>(16);
    let deadline = tokio::time::Instant::now() + settings.state_timeout;
    let condition = loop {
        let unauthenticated = state.authenticated.is_empty();
        let frame = tokio::select! {
            _ = server.shutdown.cancelled() => break Some(StreamErrorCondition::SystemShutdown),
            _ = tokio::time::sleep_until(deadline), if unauthenticated => {
                break Some(StreamErrorCondition::ConnectionTimeout)
            }
            Some(verified) = verified_rx.recv() => {
                state.verifying -= 1;
                answer_result(&mut conn, &mut state, verified);
                if conn.flush().await.is_err() {
                    break None;
                }
                continue;
            }
            frame = conn.next_frame() => frame,
        };
        let element = match frame {
            Ok(Frame::StreamOpen(header)) => {
                match open(&server, &s2s, &mut conn, &mut state, header).await {
                    Ok(()) => continue,
                    Err(condition) => break Some(condition),
                }
            }
            Ok(Frame::Element(element)) => element,
            Ok(Frame::StreamClose) => break None,
            Err(error) => {
                if let ReadError::Io(error) = &error {
                    tracing::debug!(%peer, %error, "s2s read failed");
                }
                break read_error_condition(&error);
            }
        };
        if !conn.header_sent {
            break Some(StreamErrorCondition::NotWellFormed);
        }
        if element.is("starttls", ns::TLS) {
            let tls = s2s.tls.as_ref().filter(|_| {
                !conn.transport.is_tls()
                    && state.authenticated.is_empty()
                    && s2s.config.use_starttls != UseStartTls::Off
            });
            let Some(tls) = tls else {
                // RFC 6120 section 5.4.2.2: STARTTLS not offered.
                conn.queue(&Element::bare("failure", ns::TLS));
                conn.queue_raw("</stream:stream>");
                conn.close().await;
                return;
            };
            match conn.starttls(&tls.acceptor, settings.state_timeout).await {
                Some(upgraded) => conn = upgraded,
                None => {
                    tracing::debug!(%peer, "s2s STARTTLS handshake failed");
                    return;
                }
            }
            continue;
        }
        let step = if element.is("auth", ns::SASL) {
            external(&mut conn, &mut state, &s2s, &element).await
        } else if element.is("result", ns::DIALBACK) {
            if element.attr("type").is_some() {
                // An answer where none was asked: nothing to do.
                Ok(())
            } else if state.verifying >= MAX_VERIFYING {
                Err(StreamErrorCondition::PolicyViolation)
            } else {
                state.verifying += 1;
                dialback_result(&server, &s2s, &conn, &state, &element, &verified_tx)
            }
        } else if element.is("verify", ns::DIALBACK) {
            dialback_verify(&server, &s2s, &mut conn, &element);
            Ok(())
        } else {
            inbound::stanza(&server, &mut conn, &state.authenticated, element).await
        };
        if let Err(condition) = step {
            break Some(condition);
        }
        if conn.flush().await.is_err() {
            break None;
        }
    };
    let us = state
        .authenticated
        .iter()
        .next()
        .map(|p| p.local.clone())
        .unwrap_or_default();
    match condition {
        Some(condition) => conn.fail(condition, &us).await,
        None => {
            conn.queue_raw("</stream:stream>");
            conn.close().await;
        }
    }
    if !state.authenticated.is_empty() {
        tracing::info!(%peer, remote = ?state.peer_domain, "incoming server stream closed");
    }
}

/// A stream header from the peer (the first one, or after TLS or SASL): answer with ours
/// and the features (RFC 6120 section 4.3.2).
async fn open(
    server: &Server,
    s2s: &S2s,
    conn: &mut Conn,
    state: &mut Incoming,
    header: herald_stream::StreamHeader,
) -> Result<(), StreamErrorCondition> {
    let to = header.to.clone().unwrap_or_default().to_lowercase();
    state.stream_id = crate::random_id();
    if !is_ours(server, &to) {
        // RFC 6120 section 4.9.3.6.
        return Err(StreamErrorCondition::HostUnknown);
    }
    let from = header.from.as_deref().map(str::to_lowercase);
    conn.queue_raw(&StreamHeader::server(
        &to,
        from.as_deref(),
        Some(&state.stream_id),
    ));
    conn.header_sent = true;
    if let Some(from) = &from
        && !s2s.allowed(from)
    {
        tracing::info!(remote = %from, "incoming stream from a denied domain");
        return Err(StreamErrorCondition::PolicyViolation);
    }
    if from.is_some() {
        state.peer_domain = from.clone();
    }
    let mut features = Element::bare("features", ns::STREAM);
    let tls = conn.transport.is_tls();
    let use_starttls = s2s.config.use_starttls;
    let tls_required = use_starttls.required();
    if !tls && s2s.tls.is_some() && use_starttls != UseStartTls::Off {
        let mut starttls = Element::bare("starttls", ns::TLS);
        if tls_required {
            starttls.append_child(Element::bare("required", ns::TLS));
        }
        features.append_child(starttls);
    }
    if !tls_required || tls {
        if tls
            && !state.sasl_done
            && let (Some(from), Some(tls_config)) = (&from, &s2s.tls)
            && tls_config
                .trust
                .valid_for(&conn.transport.peer_certificates(), from)
        {
            let mut mechanisms = Element::bare("mechanisms", ns::SASL);
            let mut external = Element::bare("mechanism", ns::SASL);
            external.append_text_node("EXTERNAL");
            mechanisms.append_child(external);
            features.append_child(mechanisms);
        }
        let mut dialback = Element::bare("dialback", ns::DIALBACK_FEATURE);
        dialback.append_child(Element::bare("errors", ns::DIALBACK_FEATURE));
        features.append_child(dialback);
    }
    // Written with the `stream:` prefix of the header: some servers (ejabberd 23) do not
    // recognise the features in the same namespace written as a default.
    conn.queue_raw("<stream:features>");
    for feature in features.children() {
        conn.queue(feature);
    }
    conn.queue_raw("</stream:features>");
    conn.flush()
        .await
        .map_err(|_| StreamErrorCondition::ConnectionTimeout)
}

/// SASL EXTERNAL (RFC 6120 section 6.3.4; XEP-0178): the peer's certificate is valid for
/// the domain of its stream header, and the authorization identity, if given, is that
/// domain.
async fn external(
    conn: &mut Conn,
    state: &mut Incoming,
    s2s: &S2s,
    element: &Element,
) -> Result<(), StreamErrorCondition> {
    let failure = |condition: &str| {
        let mut failure = Element::bare("failure", ns::SASL);
        failure.append_child(Element::bare(condition, ns::SASL));
        failure
    };
    let Some(from) = state.peer_domain.clone() else {
        conn.queue(&failure("not-authorized"));
        return Ok(());
    };
    if element.attr("mechanism") != Some("EXTERNAL") {
        conn.queue(&failure("invalid-mechanism"));
        return Ok(());
    }
    let text = element.text();
    let authzid = match text.trim() {
        "" | "=" => Some(from.clone()),
        encoded => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
    };
    let valid = conn.transport.is_tls()
        && s2s.tls.as_ref().is_some_and(|tls| {
            tls.trust
                .valid_for(&conn.transport.peer_certificates(), &from)
        });
    if !valid || authzid.as_deref().map(str::to_lowercase) != Some(from.clone()) {
        conn.queue(&failure("not-authorized"));
        return Ok(());
    }
    conn.queue(&Element::bare("success", ns::SASL));
    conn.flush()
        .await
        .map_err(|_| StreamErrorCondition::ConnectionTimeout)?;
    state.sasl_done = true;
    // The domain is authenticated for every domain we serve on this stream.
    state.authenticated.insert(Pair {
        local: String::new(),
        remote: from.clone(),
    });
    tracing::info!(remote = %from, "incoming server stream authenticated (SASL EXTERNAL)");
    conn.restart();
    Ok(())
}

/// `<db:result>` with a key: ask the peer's authoritative server, in the background
/// (XEP-0220 section 2.1.2); the answer comes back through `verified`.
fn dialback_result(
    server: &Arc<Server>,
    s2s: &Arc<S2s>,
    conn: &Conn,
    state: &Incoming,
    element: &Element,
    verified: &mpsc::Sender<Verified>,
) -> Result<(), StreamErrorCondition> {
    let (Some(from), Some(to)) = (element.attr("from"), element.attr("to")) else {
        return Err(StreamErrorCondition::ImproperAddressing);
    };
    let (from, to) = (from.to_lowercase(), to.to_lowercase());
    if DomainPart::new(&from).is_err() {
        return Err(StreamErrorCondition::InvalidFrom);
    }
    if !is_ours(server, &to) {
        return Err(StreamErrorCondition::HostUnknown);
    }
    if (s2s.config.use_starttls.required() && !conn.transport.is_tls()) || !s2s.allowed(&from) {
        return Err(StreamErrorCondition::PolicyViolation);
    }
    let pair = Pair {
        local: to,
        remote: from,
    };
    let key = element.text();
    let stream_id = state.stream_id.clone();
    let (server, s2s, verified) = (Arc::clone(server), Arc::clone(s2s), verified.clone());
    server.clone().tasks.spawn(async move {
        let valid = outgoing::verify(&server, &s2s, &pair, &stream_id, key.trim()).await;
        let _ = verified.send(Verified { pair, valid }).await;
    });
    Ok(())
}

/// The authoritative server's verdict arrived: tell the peer (XEP-0220 section 2.1.4).
fn answer_result(conn: &mut Conn, state: &mut Incoming, verified: Verified) {
    let Verified { pair, valid } = verified;
    let type_ = if valid { "valid" } else { "invalid" };
    conn.queue_raw(&dialback::result(
        &pair.local,
        &pair.remote,
        None,
        Some(type_),
    ));
    if valid {
        tracing::info!(remote = %pair.remote, local = %pair.local, "incoming server stream authenticated (dialback)");
        state.authenticated.insert(pair);
    } else {
        tracing::warn!(remote = %pair.remote, "dialback key refused by the remote's authoritative server");
    }
}

/// `<db:verify>`: we are the authoritative server; is the key ours? (XEP-0220 section
/// 2.1.3.)
fn dialback_verify(server: &Server, s2s: &S2s, conn: &mut Conn, element: &Element) {
    let (Some(receiving), Some(originating), Some(id)) =
        (element.attr("from"), element.attr("to"), element.attr("id"))
    else {
        return;
    };
    let valid = is_ours(server, originating)
        && s2s
            .secret
            .verify(receiving, originating, id, &element.text());
    let type_ = if valid { "valid" } else { "invalid" };
    conn.queue_raw(&dialback::verify(
        originating,
        receiving,
        id,
        None,
        Some(type_),
    ));
}

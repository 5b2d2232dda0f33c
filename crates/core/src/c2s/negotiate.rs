//! Stream negotiation for a client (RFC 6120 sections 4 to 7): stream header, features,
//! STARTTLS, SASL, resource binding. Ends in a bound session or a closed stream.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use herald_sasl::{Failure, Mechanism, ServerExchange, Step};
use herald_stream::{
    Frame, StreamErrorCondition, StreamHeader, ns, stanza::set_attr, transport::Transport,
};
use jid::{BareJid, DomainPart, FullJid, NodePart, ResourcePart};
use minidom::Element;
use tokio::net::TcpStream;
use xmpp_parsers::{
    bind::{BindQuery, BindResponse},
    stanza_error::{DefinedCondition, ErrorType},
};

use super::{C2sSettings, TlsMode, session};
use crate::{
    Server,
    conn::{Conn, ReadError, read_error_condition},
    resume::{Refused, Resumption},
    sessions::SessionHandle,
};

/// SASL attempts allowed on one stream (RFC 6120 section 6.4.5: at least 2, at most 5).
const MAX_AUTH_ATTEMPTS: u32 = 3;

/// IQs a stream may send before authenticating (XEP-0077 section 3.1.1: a server MAY refuse
/// an entity that registers too many times); beyond, the stream ends with policy-violation.
const MAX_PRE_AUTH_IQS: u32 = 10;

/// Refuse a connection beyond `max_connections` with resource-constraint.
pub(crate) async fn refuse(
    server: Arc<Server>,
    settings: Arc<C2sSettings>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    tracing::warn!(%peer, limit = settings.max_connections, per_ip = settings.max_connections_per_ip, "connection limit reached; refusing");
    let mut conn = Conn::new(Transport::Plain(tcp), 1024);
    let domain = server
        .hosts()
        .first()
        .map(|d| d.to_string())
        .unwrap_or_default();
    // On a direct-TLS port the peer cannot read plaintext; just close.
    if matches!(
        settings.tls.as_ref().map(|t| t.mode),
        Some(TlsMode::DirectTls)
    ) {
        conn.close().await;
    } else {
        conn.fail(StreamErrorCondition::ResourceConstraint, &domain)
            .await;
    }
}

/// Where the negotiation is.
struct State {
    domain: Option<DomainPart>,
    authenticated: Option<BareJid>,
    failures: u32,
    /// IQs answered before authentication (in-band registration), bounded per stream.
    pre_auth_iqs: u32,
    /// The client's address, for login throttling.
    peer: std::net::IpAddr,
    /// The account the current SASL exchange is about, once known.
    attempted: Option<BareJid>,
}

/// Serve one client connection from accept to close.
pub(crate) async fn serve(
    server: Arc<Server>,
    settings: Arc<C2sSettings>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let transport = match &settings.tls {
        Some(tls) if tls.mode == TlsMode::DirectTls => {
            let handshake =
                tokio::time::timeout(settings.state_timeout, tls.acceptor.accept(tcp)).await;
            match handshake {
                Ok(Ok(stream)) => Transport::Tls(Box::new(stream)),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
        _ => Transport::Plain(tcp),
    };
    let conn =
        Conn::new(transport, settings.max_stanza_size).with_send_timeout(settings.send_timeout);
    // Boxed, so that the connection's task is not sized for the negotiation all the
    // session long (see `session::run`); nothing of it stays live across the session.
    let (conn, jid) = {
        let mut state = State {
            domain: None,
            authenticated: None,
            failures: 0,
            pre_auth_iqs: 0,
            peer: peer.ip(),
            attempted: None,
        };
        // The whole negotiation has a deadline, not only each wait in it: a client that
        // trickles bytes cannot hold a connection slot for ever.
        let negotiated = Box::pin(tokio::time::timeout(
            settings.handshake_timeout,
            negotiate(&server, &settings, conn, &mut state, peer),
        ))
        .await;
        match negotiated {
            Ok(Some(negotiated)) => negotiated,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(%peer, "negotiation took longer than handshake_timeout");
                return;
            }
        }
    };
    session::run(server, Box::new(conn), jid).await;
}

enum Next {
    /// Keep reading in the same stream.
    Continue,
    /// The stream restarts (after SASL success).
    Restart,
    /// The stream is over.
    Stop,
}

/// Run the negotiation; returns the connection and the bound session's handle.
async fn negotiate(
    server: &Arc<Server>,
    settings: &C2sSettings,
    mut conn: Conn,
    state: &mut State,
    peer: SocketAddr,
) -> Option<(Conn, (SessionHandle, crate::queue::Inbox))> {
    'stream: loop {
        // The peer's stream header.
        let header = match read(server, settings, &mut conn, state).await? {
            Frame::StreamOpen(header) => header,
            _ => return None,
        };
        if !open_stream(server, &mut conn, state, &header).await {
            return None;
        }
        send_features(server, settings, &mut conn, state);
        if conn.flush().await.is_err() {
            return None;
        }
        loop {
            let element = match read(server, settings, &mut conn, state).await? {
                Frame::Element(element) => element,
                Frame::StreamOpen(_) => {
                    fail(&mut conn, state, StreamErrorCondition::NotWellFormed).await;
                    return None;
                }
                Frame::StreamClose => {
                    conn.queue_raw("</stream:stream>");
                    conn.close().await;
                    return None;
                }
            };
            let tls_active = conn.transport.is_tls();
            if element.is("starttls", ns::TLS) && !tls_active {
                let Some(tls) = settings.tls.clone() else {
                    // RFC 6120 section 5.4.2.2: STARTTLS not offered means failure.
                    conn.queue(&Element::bare("failure", ns::TLS));
                    conn.queue_raw("</stream:stream>");
                    conn.close().await;
                    return None;
                };
                let Some(upgraded) = conn.starttls(&tls.acceptor, settings.state_timeout).await
                else {
                    tracing::debug!(%peer, "STARTTLS handshake failed");
                    return None;
                };
                conn = upgraded;
                continue 'stream;
            }
            if state.authenticated.is_none()
                && plain_allowed(settings, &conn)
                && let Some(reply) = pre_auth_iq(server, state, &element).await
            {
                // XEP-0077 section 3.1: registration happens before authentication.
                let Some(reply) = reply else {
                    fail(&mut conn, state, StreamErrorCondition::PolicyViolation).await;
                    return None;
                };
                conn.queue(&reply);
                if conn.flush().await.is_err() {
                    return None;
                }
                continue;
            }
            if state.authenticated.is_none() {
                match authenticate(server, settings, &mut conn, state, element).await {
                    Next::Continue => continue,
                    Next::Restart => {
                        conn.restart();
                        continue 'stream;
                    }
                    Next::Stop => return None,
                }
            }
            // XEP-0198 section 5: a resumption takes the place of binding.
            if element.is("resume", crate::sm::NS) && server.stream_management.is_some() {
                let user = state.authenticated.clone()?;
                let previd = element.attr("previd").unwrap_or_default().to_owned();
                let h = element.attr("h").and_then(|h| h.parse::<u32>().ok());
                let Some(h) = h else {
                    fail(&mut conn, state, StreamErrorCondition::BadFormat).await;
                    return None;
                };
                match server
                    .resumable
                    .resume(&previd, &user, Resumption { conn, h })
                {
                    Ok(jid) => {
                        crate::metrics::resumption(true);
                        tracing::debug!(%jid, %peer, "handing the connection to the resumed session");
                        return None;
                    }
                    Err(
                        Refused::NotFound(stale_h, resumption) | Refused::Gone(stale_h, resumption),
                    ) => {
                        crate::metrics::resumption(false);
                        conn = resumption.conn;
                        // The client may bind a new session instead.
                        conn.queue(&super::session::resume_failed(stale_h));
                        if conn.flush().await.is_err() {
                            return None;
                        }
                        continue;
                    }
                }
            }
            if element.is("enable", crate::sm::NS) {
                // XEP-0198 section 3: enabling before binding is not allowed.
                conn.queue(&crate::sm::reply::failed(
                    xmpp_parsers::stanza_error::DefinedCondition::UnexpectedRequest,
                    None,
                ));
                if conn.flush().await.is_err() {
                    return None;
                }
                continue;
            }
            // Authenticated, not bound: only resource binding is allowed (RFC 6120
            // section 7.1: stanzas before binding are not-authorized).
            if !element.is("iq", ns::CLIENT) {
                fail(&mut conn, state, StreamErrorCondition::NotAuthorized).await;
                return None;
            }
            match bind(server, &mut conn, state, &element) {
                Some(bound) => {
                    if conn.flush().await.is_err() {
                        server.sessions.unbind(&bound.0.jid, bound.0.id);
                        return None;
                    }
                    return Some((conn, bound));
                }
                None => {
                    if conn.flush().await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

/// Read one frame before the session is bound, with the idle limit of `state_timeout`.
async fn read(
    server: &Server,
    settings: &C2sSettings,
    conn: &mut Conn,
    state: &State,
) -> Option<Frame> {
    let result = tokio::select! {
        result = tokio::time::timeout(settings.state_timeout, conn.next_frame()) => result,
        _ = server.shutdown.cancelled() => {
            fail(conn, state, StreamErrorCondition::SystemShutdown).await;
            return None;
        }
    };
    match result {
        Ok(Ok(frame)) => Some(frame),
        Ok(Err(error)) => {
            if let Some(condition) = read_error_condition(&error) {
                fail(conn, state, condition).await;
            } else if let ReadError::Io(error) = error {
                tracing::debug!(%error, "read failed during negotiation");
            }
            None
        }
        Err(_) => {
            fail(conn, state, StreamErrorCondition::ConnectionTimeout).await;
            None
        }
    }
}

async fn fail(conn: &mut Conn, state: &State, condition: StreamErrorCondition) {
    let domain = state
        .domain
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_default();
    conn.fail(condition, &domain).await;
}

/// Check the peer's header and answer with ours (RFC 6120 section 4.7).
async fn open_stream(
    server: &Server,
    conn: &mut Conn,
    state: &mut State,
    header: &StreamHeader,
) -> bool {
    let domain = match &header.to {
        Some(to) => DomainPart::new(to)
            .ok()
            .map(|d| d.into_owned())
            .filter(|d| server.is_local_domain(d.as_str())),
        // A client MUST include `to` (section 4.7.2); a missing one gets the first served
        // domain rather than an error, as most servers do for old clients.
        None => server.hosts().first().cloned(),
    };
    let Some(domain) = domain else {
        let first = server
            .hosts()
            .first()
            .map(|d| d.to_string())
            .unwrap_or_default();
        conn.fail(
            StreamErrorCondition::HostUnknown,
            header.to.as_deref().unwrap_or(&first),
        )
        .await;
        return false;
    };
    if state.domain.as_ref().is_some_and(|d| d != &domain) {
        // A restarted stream must stay on the domain it authenticated for.
        conn.fail(StreamErrorCondition::HostUnknown, domain.as_str())
            .await;
        return false;
    }
    state.domain = Some(domain.clone());
    // Section 4.7.5: version 1.0 is required; a higher major version is answered with ours.
    let version_ok = header
        .version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major >= 1);
    conn.queue_header(domain.as_str(), &crate::random_id());
    if !version_ok {
        conn.fail(StreamErrorCondition::UnsupportedVersion, domain.as_str())
            .await;
        return false;
    }
    true
}

/// SASL PLAIN is offered only over TLS or on a listener without a tls table.
fn plain_allowed(settings: &C2sSettings, conn: &Conn) -> bool {
    conn.transport.is_tls() || settings.tls.is_none()
}

fn tls_required_first(settings: &C2sSettings, conn: &Conn) -> bool {
    !conn.transport.is_tls()
        && matches!(
            settings.tls.as_ref().map(|t| t.mode),
            Some(TlsMode::StartTlsRequired)
        )
}

fn offered(settings: &C2sSettings, conn: &Conn) -> impl Iterator<Item = Mechanism> {
    let plain = plain_allowed(settings, conn);
    let allowed = !tls_required_first(settings, conn);
    Mechanism::ALL
        .into_iter()
        .filter(move |m| allowed && (plain || *m != Mechanism::Plain))
}

/// RFC 6120 section 4.3.2: the features for the current stage, each a typed element inside
/// the `<stream:features>` wrapper (whose prefix is the stream's).
fn send_features(server: &Server, settings: &C2sSettings, conn: &mut Conn, state: &State) {
    let mut features: Vec<Element> = Vec::new();
    if state.authenticated.is_none() {
        if !conn.transport.is_tls() && settings.tls.is_some() {
            let mut starttls = Element::bare("starttls", ns::TLS);
            if tls_required_first(settings, conn) {
                starttls.append_child(Element::bare("required", ns::TLS));
            }
            features.push(starttls);
        }
        let mechanisms: Vec<_> = offered(settings, conn).collect();
        if !mechanisms.is_empty() {
            let mut list = Element::bare("mechanisms", ns::SASL);
            for mechanism in mechanisms {
                let mut name = Element::bare("mechanism", ns::SASL);
                name.append_text_node(mechanism.name());
                list.append_child(name);
            }
            features.push(list);
        }
        if plain_allowed(settings, conn) {
            features.extend(server.extensions.pre_auth_features().cloned());
        }
    } else {
        features.push(Element::bare("bind", ns::BIND));
        if server.stream_management.is_some() {
            // XEP-0198 section 2: offered after authentication.
            features.push(Element::bare("sm", ns::SM));
        }
        features.extend(server.extensions.stream_features().iter().cloned());
        if settings.backwards_compatible_session {
            // draft-cridland-xmpp-session: optional, so new clients skip it.
            let mut session = Element::bare("session", ns::SESSION);
            session.append_child(Element::bare("optional", ns::SESSION));
            features.push(session);
        }
    }
    conn.queue_raw("<stream:features>");
    for feature in &features {
        conn.queue(feature);
    }
    conn.queue_raw("</stream:features>");
}

fn sasl_failure(conn: &mut Conn, failure: Failure) {
    // RFC 6120 section 6.5: the condition is an empty child in the SASL namespace.
    let failure = Element::builder("failure", ns::SASL)
        .append(Element::bare(failure.condition(), ns::SASL))
        .build();
    conn.queue(&failure);
}

/// A SASL `<challenge/>` or `<success/>` (RFC 6120 sections 6.4.3 and 6.4.6) carrying
/// `data` in base64, with `=` for empty data; `None` is no data at all.
fn sasl_data(name: &str, data: Option<&[u8]>) -> Element {
    let text = match data {
        None => String::new(),
        Some([]) => "=".to_owned(),
        Some(data) => BASE64.encode(data),
    };
    let mut element = Element::bare(name, ns::SASL);
    if !text.is_empty() {
        element.append_text_node(text);
    }
    element
}

/// Decode a SASL payload: empty text is "no data", `=` is empty data (RFC 6120 section 6.4.2).
fn decode_payload(element: &Element) -> Result<Option<Vec<u8>>, Failure> {
    let text = element.text();
    let text = text.trim();
    match text {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        _ => BASE64
            .decode(text)
            .map(Some)
            .map_err(|_| Failure::IncorrectEncoding),
    }
}

/// Handle one element before authentication.
async fn authenticate(
    server: &Server,
    settings: &C2sSettings,
    conn: &mut Conn,
    state: &mut State,
    element: Element,
) -> Next {
    if !element.is("auth", ns::SASL) {
        // RFC 6120 section 6.4.? and 4.9.3.12: anything else before authentication.
        fail(conn, state, StreamErrorCondition::NotAuthorized).await;
        return Next::Stop;
    }
    state.attempted = None;
    let outcome = if server.auth_throttle.ip_allowed(state.peer, Instant::now()) {
        sasl_exchange(server, settings, conn, state, &element).await
    } else {
        tracing::debug!(peer = %state.peer, "too many failed logins from this address");
        Ok(Err(Failure::TemporaryAuthFailure))
    };
    match outcome {
        Err(Next::Stop) => Next::Stop,
        Err(other) => other,
        Ok(Err(failure)) => {
            if failure == Failure::NotAuthorized {
                server
                    .auth_throttle
                    .failed(state.peer, state.attempted.as_ref(), Instant::now());
            }
            sasl_failure(conn, failure);
            state.failures += 1;
            if state.failures >= MAX_AUTH_ATTEMPTS {
                // Section 6.4.5: after the allowed retries the server terminates the stream.
                fail(conn, state, StreamErrorCondition::PolicyViolation).await;
                return Next::Stop;
            }
            if conn.flush().await.is_err() {
                Next::Stop
            } else {
                Next::Continue
            }
        }
        Ok(Ok(user)) => {
            tracing::info!(user = %user, "authenticated");
            server.auth_throttle.succeeded(&user);
            state.authenticated = Some(user);
            if conn.flush().await.is_err() {
                Next::Stop
            } else {
                Next::Restart
            }
        }
    }
}

/// Run one SASL exchange. The outer error is a stream-level outcome (stop); the inner one
/// a SASL failure to report.
async fn sasl_exchange(
    server: &Server,
    settings: &C2sSettings,
    conn: &mut Conn,
    state: &mut State,
    auth: &Element,
) -> Result<Result<BareJid, Failure>, Next> {
    if tls_required_first(settings, conn) {
        return Ok(Err(Failure::EncryptionRequired));
    }
    let name = auth.attr("mechanism").unwrap_or_default();
    let Some(mechanism) = Mechanism::from_name(name) else {
        return Ok(Err(Failure::InvalidMechanism));
    };
    if !offered(settings, conn).any(|m| m == mechanism) {
        // PLAIN over an unencrypted stream of a TLS listener (RFC 6120 section 6.4.2).
        return Ok(Err(Failure::EncryptionRequired));
    }
    let domain = state.domain.clone().ok_or(Next::Stop)?;
    let initial = match decode_payload(auth) {
        Ok(initial) => initial,
        Err(failure) => return Ok(Err(failure)),
    };
    let mut exchange = ServerExchange::new(mechanism);
    let mut step = exchange.step(initial.as_deref());
    let mut user = None;
    loop {
        match step {
            Step::NeedCredentials { username, authzid } => {
                let bare = NodePart::new(&username)
                    .ok()
                    .map(|node| BareJid::from_parts(Some(&node), &domain));
                if let Some(bare) = &bare {
                    if !server.auth_throttle.account_allowed(bare, Instant::now()) {
                        tracing::debug!(user = %bare, "too many failed logins for this account");
                        return Ok(Err(Failure::TemporaryAuthFailure));
                    }
                    state.attempted = Some(bare.clone());
                }
                if let (Some(authzid), Some(bare)) = (&authzid, &bare) {
                    // RFC 6120 section 6.4.6: an authzid other than the account's own
                    // bare JID is not allowed here.
                    if BareJid::new(authzid).ok().as_ref() != Some(bare) {
                        return Ok(Err(Failure::InvalidAuthzid));
                    }
                }
                let credentials = match &bare {
                    Some(bare) => match server.storage.accounts().credentials(bare).await {
                        Ok(found) => found,
                        Err(error) => {
                            tracing::error!(%error, "credential lookup failed");
                            return Ok(Err(Failure::TemporaryAuthFailure));
                        }
                    },
                    None => None,
                };
                user = bare;
                step = if mechanism == Mechanism::Plain {
                    // PLAIN derives the salted password from the one sent (thousands of hash
                    // rounds): off the async threads, as in-band registration does.
                    let mut moved = exchange;
                    let Ok((back, next)) = tokio::task::spawn_blocking(move || {
                        let next = moved.provide_credentials(credentials.as_ref());
                        (moved, next)
                    })
                    .await
                    else {
                        return Ok(Err(Failure::TemporaryAuthFailure));
                    };
                    exchange = back;
                    next
                } else {
                    exchange.provide_credentials(credentials.as_ref())
                };
            }
            Step::Challenge(data) => {
                conn.queue(&sasl_data("challenge", Some(&data)));
                if conn.flush().await.is_err() {
                    return Err(Next::Stop);
                }
                let element = match read(server, settings, conn, state).await {
                    Some(Frame::Element(element)) => element,
                    _ => return Err(Next::Stop),
                };
                if element.is("abort", ns::SASL) {
                    return Ok(Err(Failure::Aborted));
                }
                if !element.is("response", ns::SASL) {
                    return Ok(Err(Failure::MalformedRequest));
                }
                match decode_payload(&element) {
                    Ok(data) => step = exchange.step(Some(data.as_deref().unwrap_or_default())),
                    Err(failure) => return Ok(Err(failure)),
                }
            }
            Step::Success {
                additional_data, ..
            } => {
                let Some(user) = user else {
                    return Ok(Err(Failure::NotAuthorized));
                };
                conn.queue(&sasl_data("success", additional_data.as_deref()));
                return Ok(Ok(user));
            }
            Step::Failure(failure) => return Ok(Err(failure)),
        }
    }
}

/// Resource binding (RFC 6120 section 7). Queues the reply; returns the bound session.
fn bind(
    server: &Server,
    conn: &mut Conn,
    state: &State,
    iq: &Element,
) -> Option<(SessionHandle, crate::queue::Inbox)> {
    let id = iq.attr("id").unwrap_or_default().to_owned();
    let reply_error = |conn: &mut Conn, type_: ErrorType, condition: DefinedCondition| {
        let mut reply = Element::bare("iq", ns::CLIENT);
        set_attr(&mut reply, "type", "error");
        set_attr(&mut reply, "id", id.clone());
        reply.append_child(herald_stream::stanza::stanza_error(type_, condition));
        conn.queue(&reply);
    };
    let payload = iq
        .get_child("bind", ns::BIND)
        .filter(|_| iq.attr("type") == Some("set"));
    let Some(payload) = payload else {
        // Section 7.1: before binding, other IQs are not processed.
        reply_error(conn, ErrorType::Cancel, DefinedCondition::NotAllowed);
        return None;
    };
    let Ok(query) = BindQuery::try_from(payload.clone()) else {
        reply_error(conn, ErrorType::Modify, DefinedCondition::BadRequest);
        return None;
    };
    let resource = match query.resource.as_deref().map(str::trim) {
        // Section 7.6.2.1: the server generates a resource when none is given.
        None | Some("") => ResourcePart::new(&format!("herald-{}", &crate::random_id()[..12]))
            .ok()?
            .into_owned(),
        Some(requested) => match ResourcePart::new(requested) {
            Ok(resource) => resource.into_owned(),
            // Section 7.7.2.1: a resource that cannot be processed is bad-request.
            Err(_) => {
                reply_error(conn, ErrorType::Modify, DefinedCondition::BadRequest);
                return None;
            }
        },
    };
    let user = state.authenticated.as_ref()?;
    let jid = FullJid::from_parts(user.node(), user.domain(), &resource);
    if let Some(max) = server.max_user_sessions {
        let bound = server.sessions.resources(user);
        let replacing = bound.iter().any(|r| r.handle.jid == jid);
        if !replacing && bound.len() >= max {
            // Section 7.6.2.1: the account has reached its limit of connected resources.
            reply_error(conn, ErrorType::Wait, DefinedCondition::ResourceConstraint);
            return None;
        }
    }
    let (handle, rx) = SessionHandle::new(jid.clone());
    if let Some(old) = server.sessions.bind(handle.clone()) {
        // Section 7.7.2.2: the new session wins; the old one ends with conflict.
        old.control.close(StreamErrorCondition::Conflict);
    }
    let mut reply = Element::bare("iq", ns::CLIENT);
    set_attr(&mut reply, "type", "result");
    set_attr(&mut reply, "id", id);
    reply.append_child(BindResponse { jid: jid.clone() }.into());
    conn.queue(&reply);
    tracing::debug!(%jid, "resource bound");
    Some((handle, rx))
}

/// Answer an IQ that a module handles before authentication (XEP-0077 in-band
/// registration): `None` when no module does, so the element is treated as any other;
/// `Some(None)` when the stream has sent too many.
async fn pre_auth_iq(
    server: &Server,
    state: &mut State,
    element: &Element,
) -> Option<Option<Element>> {
    if !element.is("iq", ns::CLIENT) {
        return None;
    }
    let mut children = element.children();
    let (Some(payload), None) = (children.next(), children.next()) else {
        return None;
    };
    let handler = server.extensions.pre_auth_iq_handler(&payload.ns())?;
    let domain = state.domain.clone()?;
    let stanza = herald_stream::Stanza::parse(element.clone()).ok()?;
    let herald_stream::StanzaKind::Iq(kind) = stanza.kind else {
        return None;
    };
    if matches!(
        kind,
        herald_stream::stanza::IqType::Result | herald_stream::stanza::IqType::Error
    ) {
        return None;
    }
    state.pre_auth_iqs += 1;
    if state.pre_auth_iqs > MAX_PRE_AUTH_IQS {
        return Some(None);
    }
    let request = crate::module::PreAuthRequest {
        domain: &domain,
        peer: state.peer,
        kind,
        payload,
    };
    Some(Some(match handler.handle(server, request).await {
        Ok(payload) => herald_stream::stanza::iq_result(&stanza, payload),
        Err(error) => stanza
            .error_reply(error.type_, error.condition)
            .unwrap_or_else(|| herald_stream::stanza::iq_result(&stanza, None)),
    }))
}

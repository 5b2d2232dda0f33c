//! Outgoing server links: one task per domain pair (RFC 6120 sections 4-6; XEP-0220 for
//! dialback; XEP-0368 for direct TLS), and the short connections that verify a dialback
//! key with a remote domain's authoritative server.

use std::sync::Arc;

use base64::Engine;
use herald_stream::{Frame, Stanza, StreamErrorCondition, StreamHeader, ns, transport::Transport};
use minidom::Element;
use rustls_pki_types::ServerName;
use tokio::{net::TcpStream, sync::mpsc};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::{Pair, S2s, UseStartTls, dialback};
use crate::{
    Server,
    conn::{Conn, ReadError},
};

/// Largest element accepted from a remote server.
pub(crate) const MAX_STANZA_SIZE: usize = 1024 * 1024;

/// A stream that is open (and encrypted when it should be), not yet authenticated.
pub(super) struct Opened {
    pub conn: Conn,
    pub stream_id: String,
    pub features: Element,
}

/// Why a link could not be made: the condition its stanzas bounce with.
type Failed = DefinedCondition;

/// An authenticated outgoing stream.
pub(super) struct Established {
    conn: Conn,
    /// XEP-0288: the receiving server may send us stanzas on it too.
    bidi: bool,
    /// The receiving server's stream id (dialback keys on this stream are bound to it).
    stream_id: String,
}

/// The task of one outgoing link.
pub(super) async fn run(
    server: Arc<Server>,
    pair: Pair,
    id: u64,
    mut queue: mpsc::Receiver<Element>,
) {
    let Some(s2s) = server.s2s().cloned() else {
        return;
    };
    let _open = crate::metrics::Connection::open("s2s_out");
    let connecting = tokio::time::timeout(s2s.config.connection_timeout, connect(&s2s, &pair));
    let attempt = tokio::select! {
        attempt = connecting => attempt.unwrap_or(Err(DefinedCondition::RemoteServerTimeout)),
        _ = server.shutdown.cancelled() => Err(DefinedCondition::RemoteServerTimeout),
    };
    let Established {
        mut conn,
        bidi,
        stream_id,
    } = match attempt {
        Ok(established) => established,
        Err(condition) => {
            tracing::info!(local = %pair.local, remote = %pair.remote, ?condition, "cannot reach the remote server");
            s2s.link_ended(&pair, id, Some(condition.clone()));
            queue.close();
            while let Some(element) = queue.recv().await {
                if let Ok(stanza) = Stanza::parse(element) {
                    server.bounce(&stanza, ErrorType::Cancel, condition.clone());
                }
            }
            return;
        }
    };
    tracing::info!(local = %pair.local, remote = %pair.remote, "server link up");
    let link = Bidi {
        on: bidi,
        pair: &pair,
        stream_id: &stream_id,
    };
    let end = serve(&server, &s2s, &mut conn, &mut queue, link).await;
    // No new stanza reaches this link from now on; what is still queued is written if the
    // stream still stands, else handed to a new link.
    s2s.link_ended(&pair, id, None);
    queue.close();
    let mut left = Vec::new();
    while let Some(element) = queue.recv().await {
        left.push(element);
    }
    match end {
        End::Idle | End::Shutdown => {
            for element in left {
                conn.queue_moving(&element, ns::CLIENT, ns::SERVER);
            }
            if end == End::Shutdown {
                conn.fail(StreamErrorCondition::SystemShutdown, &pair.local)
                    .await;
            } else {
                conn.queue_raw("</stream:stream>");
                conn.close().await;
            }
        }
        End::Broken => {
            conn.close().await;
            for element in left {
                if let Ok(stanza) = Stanza::parse(element) {
                    s2s.send(&server, stanza);
                }
            }
        }
    }
    tracing::info!(local = %pair.local, remote = %pair.remote, ?end, "server link closed");
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Idle,
    Shutdown,
    Broken,
}

/// What a link knows to take stanzas from the receiving server (XEP-0288).
struct Bidi<'a> {
    on: bool,
    pair: &'a Pair,
    stream_id: &'a str,
}

/// The authenticated link: queued stanzas out; from the peer, its end, and on a
/// bidirectional link its stanzas and dialback requests; until idle, shutdown or a broken
/// stream.
async fn serve(
    server: &Arc<Server>,
    s2s: &Arc<S2s>,
    conn: &mut Conn,
    queue: &mut mpsc::Receiver<Element>,
    bidi: Bidi<'_>,
) -> End {
    let idle = s2s.config.idle_timeout;
    // XEP-0288 section 3: the receiving server's own domain is the one we resolved and
    // connected to (the assurance dialback gives); other domains of it authenticate with
    // dialback on this stream.
    let mut authenticated = std::collections::HashSet::new();
    if bidi.on {
        authenticated.insert(Pair {
            local: String::new(),
            remote: bidi.pair.remote.clone(),
        });
    }
    let (verified_tx, mut verified_rx) = mpsc::channel::<(Pair, bool)>(16);
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            _ = server.shutdown.cancelled() => return End::Shutdown,
            _ = tokio::time::sleep_until(deadline) => return End::Idle,
            Some((pair, valid)) = verified_rx.recv() => {
                let type_ = if valid { "valid" } else { "invalid" };
                conn.queue_raw(&dialback::result(&pair.local, &pair.remote, None, Some(type_)));
                if valid {
                    authenticated.insert(pair);
                }
                if conn.flush().await.is_err() {
                    return End::Broken;
                }
            }
            element = queue.recv() => {
                let Some(element) = element else { return End::Idle };
                deadline = tokio::time::Instant::now() + idle;
                conn.queue_moving(&element, ns::CLIENT, ns::SERVER);
                while let Ok(next) = queue.try_recv() {
                    conn.queue_moving(&next, ns::CLIENT, ns::SERVER);
                }
                if conn.flush().await.is_err() {
                    return End::Broken;
                }
            }
            frame = conn.next_frame() => match frame {
                Ok(Frame::Element(element)) => {
                    if element.is("error", ns::STREAM) {
                        tracing::info!(error = %String::from(&element), "remote server ended the link with an error");
                        return End::Broken;
                    }
                    if !bidi.on {
                        // A one-way link carries nothing from the receiving side.
                        continue;
                    }
                    deadline = tokio::time::Instant::now() + idle;
                    if element.is("result", ns::DIALBACK) {
                        reverse_dialback(server, s2s, &element, bidi.stream_id, &verified_tx);
                        continue;
                    }
                    if let Err(condition) =
                        super::inbound::stanza(server, conn, &authenticated, element).await
                    {
                        conn.fail(condition, &bidi.pair.local).await;
                        return End::Broken;
                    }
                    if conn.flush().await.is_err() {
                        return End::Broken;
                    }
                }
                Ok(Frame::StreamClose) | Ok(Frame::StreamOpen(_)) => return End::Broken,
                Err(_) => return End::Broken,
            },
        }
    }
}

/// A `<db:result>` with a key on a bidirectional link: another domain of the receiving
/// server asks to send on it; its authoritative server is asked, in the background.
fn reverse_dialback(
    server: &Arc<Server>,
    s2s: &Arc<S2s>,
    element: &Element,
    stream_id: &str,
    verified: &mpsc::Sender<(Pair, bool)>,
) {
    let (Some(from), Some(to)) = (element.attr("from"), element.attr("to")) else {
        return;
    };
    if element.attr("type").is_some() || !super::is_ours(server, to) || !s2s.allowed(from) {
        return;
    }
    let pair = Pair {
        local: to.to_lowercase(),
        remote: from.to_lowercase(),
    };
    let key = element.text();
    let (server2, s2s2, verified, stream_id) = (
        Arc::clone(server),
        Arc::clone(s2s),
        verified.clone(),
        stream_id.to_owned(),
    );
    server.tasks.spawn(async move {
        let valid = verify(&server2, &s2s2, &pair, &stream_id, key.trim()).await;
        let _ = verified.send((pair, valid)).await;
    });
}

/// Resolve, connect, open the stream (with TLS as configured) and authenticate.
async fn connect(s2s: &S2s, pair: &Pair) -> Result<Established, Failed> {
    let mut opened = open(s2s, pair).await?;
    let certified = s2s
        .tls
        .as_ref()
        .is_some_and(|tls| tls.own_certificate_valid_for(&pair.local));
    if certified && opened.conn.transport.is_tls() && offers_external(&opened.features) {
        let bidi = request_bidi(&mut opened);
        match external(&mut opened.conn, pair).await? {
            true => {
                return Ok(Established {
                    conn: opened.conn,
                    bidi,
                    stream_id: opened.stream_id,
                });
            }
            false => {
                // Some servers take no dialback on a stream where SASL failed: a new stream
                // goes straight to dialback.
                opened.conn.queue_raw("</stream:stream>");
                opened.conn.close().await;
                opened = open(s2s, pair).await?;
            }
        }
    }
    let bidi = request_bidi(&mut opened);
    let conn = &mut opened.conn;
    // XEP-0220 section 2.1.1: our key for this stream.
    let key = s2s.secret.key(&pair.remote, &pair.local, &opened.stream_id);
    conn.queue_raw(&dialback::result(
        &pair.local,
        &pair.remote,
        Some(&key),
        None,
    ));
    flush(conn).await?;
    loop {
        let element = next_element(conn).await?;
        if element.is("result", ns::DIALBACK)
            && element.attr("from") == Some(pair.remote.as_str())
            && element.attr("to") == Some(pair.local.as_str())
        {
            return match element.attr("type") {
                Some("valid") => Ok(Established {
                    conn: opened.conn,
                    bidi,
                    stream_id: opened.stream_id,
                }),
                _ => {
                    tracing::info!(remote = %pair.remote, answer = %String::from(&element), "dialback refused");
                    Err(DefinedCondition::RemoteServerNotFound)
                }
            };
        }
        if element.is("error", ns::STREAM) {
            tracing::info!(remote = %pair.remote, error = %String::from(&element), "remote server refused the stream");
            return Err(DefinedCondition::RemoteServerNotFound);
        }
    }
}

/// XEP-0288 section 2: where the receiving server offers bidirectional streams, ask for
/// one (before authenticating), so that it sends its stanzas for us on this stream.
fn request_bidi(opened: &mut Opened) -> bool {
    let offered = opened
        .features
        .get_child("bidi", ns::BIDI_FEATURE)
        .is_some();
    if offered {
        opened.conn.queue(&Element::bare("bidi", ns::BIDI));
    }
    offered
}

/// SASL EXTERNAL (RFC 6120 section 6.3.4; XEP-0178): `true` once the stream is restarted
/// authenticated, `false` when the peer refuses our certificate.
async fn external(conn: &mut Conn, pair: &Pair) -> Result<bool, Failed> {
    let mut auth = Element::bare("auth", ns::SASL);
    herald_stream::stanza::set_attr(&mut auth, "mechanism", "EXTERNAL");
    auth.append_text_node(base64::engine::general_purpose::STANDARD.encode(pair.local.as_bytes()));
    conn.queue(&auth);
    flush(conn).await?;
    let answer = next_element(conn).await?;
    if !answer.is("success", ns::SASL) {
        tracing::info!(remote = %pair.remote, answer = %String::from(&answer), "SASL EXTERNAL refused; trying dialback");
        return Ok(false);
    }
    conn.restart();
    conn.queue_raw(&StreamHeader::server(&pair.local, Some(&pair.remote), None));
    conn.header_sent = true;
    flush(conn).await?;
    stream_open(conn).await?;
    let _features = next_element(conn).await?;
    tracing::debug!(remote = %pair.remote, "outgoing stream authenticated with SASL EXTERNAL");
    Ok(true)
}

fn offers_external(features: &Element) -> bool {
    features.get_child("mechanisms", ns::SASL).is_some_and(|m| {
        m.children()
            .any(|c| c.is("mechanism", ns::SASL) && c.text().trim() == "EXTERNAL")
    })
}

/// Ask `pair.remote`'s authoritative server whether `key` is its key for our stream
/// `stream_id` (XEP-0220 section 2.1.2), over a connection of its own. `pair.local` is the
/// receiving domain (ours).
pub(super) async fn verify(
    server: &Server,
    s2s: &S2s,
    pair: &Pair,
    stream_id: &str,
    key: &str,
) -> bool {
    let check = async {
        let mut opened = open(s2s, pair).await.ok()?;
        let conn = &mut opened.conn;
        conn.queue_raw(&dialback::verify(
            &pair.local,
            &pair.remote,
            stream_id,
            Some(key),
            None,
        ));
        flush(conn).await.ok()?;
        loop {
            let element = next_element(conn).await.ok()?;
            if element.is("verify", ns::DIALBACK) && element.attr("id") == Some(stream_id) {
                let valid = element.attr("type") == Some("valid")
                    && element.attr("from") == Some(pair.remote.as_str());
                conn.queue_raw("</stream:stream>");
                conn.close().await;
                return Some(valid);
            }
            if element.is("error", ns::STREAM) {
                return None;
            }
        }
    };
    let within = s2s.config.connection_timeout;
    // Shutdown does not wait for a verification.
    tokio::select! {
        answer = tokio::time::timeout(within, check) => matches!(answer, Ok(Some(true))),
        _ = server.shutdown.cancelled() => false,
    }
}

/// Resolve `pair.remote`, connect to the first address that answers, open the stream and
/// negotiate TLS as `use_starttls` says.
pub(super) async fn open(s2s: &S2s, pair: &Pair) -> Result<Opened, Failed> {
    let targets = s2s.resolver.targets(&s2s.config, &pair.remote).await;
    if targets.is_empty() {
        return Err(DefinedCondition::RemoteServerNotFound);
    }
    let mut connected = None;
    for target in &targets {
        match TcpStream::connect(target.addr).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                connected = Some((tcp, target.direct_tls));
                break;
            }
            Err(error) => {
                tracing::debug!(remote = %pair.remote, addr = %target.addr, %error, "connect failed")
            }
        }
    }
    let Some((tcp, direct_tls)) = connected else {
        return Err(DefinedCondition::RemoteServerNotFound);
    };
    let transport = if direct_tls {
        tls_connect(s2s, tcp, &pair.remote).await?
    } else {
        Transport::Plain(tcp)
    };
    let mut conn = Conn::new(transport, MAX_STANZA_SIZE).with_content_namespace(ns::SERVER);
    loop {
        conn.queue_raw(&StreamHeader::server(&pair.local, Some(&pair.remote), None));
        conn.header_sent = true;
        flush(&mut conn).await?;
        let header = stream_open(&mut conn).await?;
        let stream_id = header.id.unwrap_or_default();
        if header.version.as_deref() != Some("1.0") {
            // A pre-RFC 6120 server: no features, dialback straight away.
            return Ok(Opened {
                conn,
                stream_id,
                features: Element::bare("features", ns::STREAM),
            });
        }
        let features = next_element(&mut conn).await?;
        if !features.is("features", ns::STREAM) {
            return Err(DefinedCondition::RemoteServerNotFound);
        }
        let tls = conn.transport.is_tls();
        let use_starttls = s2s.config.use_starttls;
        if !tls
            && s2s.tls.is_some()
            && use_starttls != UseStartTls::Off
            && features.get_child("starttls", ns::TLS).is_some()
        {
            conn.queue(&Element::bare("starttls", ns::TLS));
            flush(&mut conn).await?;
            let answer = next_element(&mut conn).await?;
            if !answer.is("proceed", ns::TLS) {
                return Err(DefinedCondition::RemoteServerNotFound);
            }
            let Transport::Plain(tcp) = conn.transport else {
                return Err(DefinedCondition::RemoteServerNotFound);
            };
            let transport = tls_connect(s2s, tcp, &pair.remote).await?;
            conn = Conn::new(transport, MAX_STANZA_SIZE).with_content_namespace(ns::SERVER);
            continue;
        }
        if !tls && use_starttls.required() {
            tracing::info!(remote = %pair.remote, "the remote server offers no TLS, which use_starttls requires");
            return Err(DefinedCondition::RemoteServerNotFound);
        }
        if tls
            && use_starttls == UseStartTls::RequiredTrusted
            && !s2s.tls.as_ref().is_some_and(|t| {
                t.trust
                    .valid_for(&conn.transport.peer_certificates(), &pair.remote)
            })
        {
            tracing::info!(remote = %pair.remote, "the remote server's certificate is not valid for it, which use_starttls = required_trusted refuses");
            return Err(DefinedCondition::RemoteServerNotFound);
        }
        return Ok(Opened {
            conn,
            stream_id,
            features,
        });
    }
}

async fn tls_connect(s2s: &S2s, tcp: TcpStream, remote: &str) -> Result<Transport, Failed> {
    let Some(tls) = &s2s.tls else {
        return Err(DefinedCondition::RemoteServerNotFound);
    };
    let name = ServerName::try_from(remote.to_owned())
        .map_err(|_| DefinedCondition::RemoteServerNotFound)?;
    match tls.connector.connect(name, tcp).await {
        Ok(stream) => Ok(Transport::ClientTls(Box::new(stream))),
        Err(error) => {
            tracing::info!(%remote, %error, "TLS with the remote server failed");
            Err(DefinedCondition::RemoteServerNotFound)
        }
    }
}

async fn flush(conn: &mut Conn) -> Result<(), Failed> {
    conn.flush()
        .await
        .map_err(|_| DefinedCondition::RemoteServerNotFound)
}

async fn stream_open(conn: &mut Conn) -> Result<herald_stream::StreamHeader, Failed> {
    match conn.next_frame().await {
        Ok(Frame::StreamOpen(header)) => Ok(header),
        _ => Err(DefinedCondition::RemoteServerNotFound),
    }
}

async fn next_element(conn: &mut Conn) -> Result<Element, Failed> {
    match conn.next_frame().await {
        Ok(Frame::Element(element)) => Ok(element),
        Ok(_) => Err(DefinedCondition::RemoteServerNotFound),
        Err(ReadError::Eof | ReadError::Io(_) | ReadError::Frame(_)) => {
            Err(DefinedCondition::RemoteServerNotFound)
        }
    }
}

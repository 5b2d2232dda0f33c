//! A bound client session (RFC 6120 section 7 onwards): stanzas in from the client are
//! stamped and routed; stanzas queued for it are written out in batches. With stream
//! management (XEP-0198) the session keeps what the client has not acknowledged, and a
//! resumable session outlives its connection: it waits for the client to come back on a new
//! one, and routes what is left again when it finally ends.

use std::sync::Arc;

use herald_stream::{
    Frame, StreamErrorCondition, ns,
    stanza::{
        IqType, Stanza, StanzaKind, StanzaParseError, iq_result, set_attr, stanza_error,
        strip_internal,
    },
};
use jid::Jid;
use minidom::Element;
use tokio::sync::mpsc;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::{
    Origin, Server,
    conn::{Conn, ReadError, read_error_condition},
    hooks::UnackedMessage,
    presence,
    resume::Resumption,
    sessions::SessionHandle,
    sm::{self, Sm, SmError},
};

/// Most stanzas written before one flush, so a busy session still flushes often.
const WRITE_BATCH: usize = 64;

/// How a connected phase ended.
enum End {
    /// The client closed its stream: close ours; the session is over.
    Closed,
    /// Send this stream error; the session is over.
    Error(StreamErrorCondition),
    /// The socket is gone; a resumable session waits for its client.
    Gone,
    /// A new connection resumed the session; the old one is dropped.
    Resumed(Box<Resumption>),
}

/// A bound session's state that outlives any one connection.
struct Session {
    server: Arc<Server>,
    handle: SessionHandle,
    rx: mpsc::Receiver<Element>,
    sm: Option<Sm>,
    resumptions: Option<mpsc::Receiver<Resumption>>,
}

/// Run the session until it ends, then unregister it and route again what the client never
/// acknowledged.
pub(crate) async fn run(
    server: Arc<Server>,
    conn: Conn,
    (handle, rx): (SessionHandle, mpsc::Receiver<Element>),
) {
    let mut session = Session {
        server,
        handle,
        rx,
        sm: None,
        resumptions: None,
    };
    let mut conn = Some(conn);
    loop {
        let end = match conn.as_mut() {
            Some(c) => session.serve(c).await,
            None => End::Gone,
        };
        match end {
            End::Resumed(resumption) => {
                if let Some(mut old) = conn.take() {
                    old.close().await;
                }
                conn = session.resume(*resumption).await;
            }
            End::Gone if session.resumptions.is_some() => match session.wait().await {
                Ok(resumption) => conn = session.resume(resumption).await,
                Err(reason) => {
                    tracing::debug!(jid = %session.handle.jid, ?reason, "resumable session ended");
                    break;
                }
            },
            End::Gone => break,
            End::Closed => {
                if let Some(c) = conn.as_mut() {
                    c.queue_raw("</stream:stream>");
                    c.close().await;
                }
                break;
            }
            End::Error(condition) => {
                if let Some(c) = conn.as_mut() {
                    // What was routed to this session is written before the stream error,
                    // so a shutdown or a replaced session loses nothing it had accepted.
                    session.rx.close();
                    while let Ok(element) = session.rx.try_recv() {
                        if session.sm.is_none() {
                            c.queue(&element);
                        } else {
                            let _ = session.track_sent(&element);
                            c.queue(&element);
                        }
                    }
                    c.fail(condition, session.handle.jid.domain().as_str())
                        .await;
                }
                break;
            }
        }
    }
    session.finish().await;
}

/// Resolves to the next resumption, or never when the session is not resumable.
async fn next_resumption(resumptions: &mut Option<mpsc::Receiver<Resumption>>) -> Resumption {
    match resumptions {
        Some(rx) => match rx.recv().await {
            Some(resumption) => resumption,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

impl Session {
    fn domain(&self) -> String {
        self.handle.jid.domain().to_string()
    }

    /// Count a stanza written to the client; `Ok(true)` when an ack should be requested.
    fn track_sent(&mut self, element: &Element) -> Result<bool, SmError> {
        match &mut self.sm {
            Some(sm) if sm::is_stanza(element) => sm.sent(element),
            _ => Ok(false),
        }
    }

    /// Queue a stanza for the client, counting it for stream management.
    fn write(
        &mut self,
        conn: &mut Conn,
        element: &Element,
        request_ack: &mut bool,
    ) -> Result<(), End> {
        match self.track_sent(element) {
            Ok(request) => *request_ack |= request,
            Err(error) => return Err(sm_failure(error)),
        }
        conn.queue(element);
        Ok(())
    }

    async fn serve(&mut self, conn: &mut Conn) -> End {
        loop {
            tokio::select! {
                biased;
                _ = self.server.shutdown.cancelled() => return End::Error(StreamErrorCondition::SystemShutdown),
                reason = self.handle.control.closed() => return End::Error(reason),
                resumption = next_resumption(&mut self.resumptions) => return End::Resumed(Box::new(resumption)),
                outbound = self.rx.recv() => {
                    let Some(first) = outbound else { return End::Gone };
                    let mut request_ack = false;
                    if let Err(end) = self.write(conn, &first, &mut request_ack) {
                        return end;
                    }
                    for _ in 1..WRITE_BATCH {
                        let Ok(next) = self.rx.try_recv() else { break };
                        if let Err(end) = self.write(conn, &next, &mut request_ack) {
                            return end;
                        }
                    }
                    if request_ack {
                        conn.queue_raw("<r xmlns='urn:xmpp:sm:3'/>");
                    }
                    if conn.flush().await.is_err() {
                        return End::Gone;
                    }
                }
                frame = conn.next_frame() => {
                    match frame {
                        Ok(Frame::Element(element)) => {
                            if let Err(end) = self.inbound(conn, element).await {
                                return end;
                            }
                        }
                        Ok(Frame::StreamClose) => return End::Closed,
                        Ok(Frame::StreamOpen(_)) => return End::Error(StreamErrorCondition::NotWellFormed),
                        Err(error) => {
                            return match read_error_condition(&error) {
                                Some(condition) => End::Error(condition),
                                None => {
                                    if let ReadError::Io(error) = error {
                                        tracing::debug!(jid = %self.handle.jid, %error, "read failed");
                                    }
                                    End::Gone
                                }
                            };
                        }
                    }
                }
            }
        }
    }

    /// One element from the client.
    async fn inbound(&mut self, conn: &mut Conn, mut element: Element) -> Result<(), End> {
        if element.ns() == sm::NS {
            return self.stream_management(conn, element).await;
        }
        if let Some(sm) = &mut self.sm
            && sm::is_stanza(&element)
        {
            sm.received();
        }
        // A client cannot forge herald's internal metadata.
        strip_internal(&mut element);
        let mut stanza = match Stanza::parse(element) {
            Ok(stanza) => stanza,
            Err(rejected) => {
                let condition = match rejected.error {
                    StanzaParseError::NotAStanza(_) => {
                        return Err(End::Error(StreamErrorCondition::UnsupportedStanzaType));
                    }
                    StanzaParseError::BadJid(_) => DefinedCondition::JidMalformed,
                    StanzaParseError::BadRequest(_) => DefinedCondition::BadRequest,
                };
                if let Some(reply) = reject(rejected.element, ErrorType::Modify, condition) {
                    self.reply(conn, reply).await?;
                }
                return Ok(());
            }
        };
        // RFC 6120 section 8.1.2.1: the server stamps the full JID of the sender, whatever
        // the client put there.
        stanza.set_from(Jid::from(self.handle.jid.clone()));
        if is_legacy_session(&stanza) {
            // RFC 3921 section 3: establishing a session is a no-op now; answer result.
            return self.reply(conn, iq_result(&stanza, None)).await;
        }
        self.server
            .route(Origin::Client(&self.handle.jid), stanza)
            .await;
        Ok(())
    }

    /// Write a reply produced by the session itself.
    async fn reply(&mut self, conn: &mut Conn, reply: Element) -> Result<(), End> {
        let mut request_ack = false;
        self.write(conn, &reply, &mut request_ack)?;
        if request_ack {
            conn.queue_raw("<r xmlns='urn:xmpp:sm:3'/>");
        }
        conn.flush().await.map_err(|_| End::Gone)
    }

    /// XEP-0198 elements: enable, r, a.
    async fn stream_management(&mut self, conn: &mut Conn, element: Element) -> Result<(), End> {
        match element.name() {
            "enable" => {
                let Some(settings) = self.server.stream_management.clone() else {
                    // Not offered: section 3 says the server answers <failed/>.
                    conn.queue_raw(&failed("feature-not-implemented", None));
                    return conn.flush().await.map_err(|_| End::Gone);
                };
                if self.sm.is_some() {
                    conn.queue_raw(&failed("unexpected-request", None));
                    return conn.flush().await.map_err(|_| End::Gone);
                }
                let resume = matches!(element.attr("resume"), Some("true" | "1"));
                if resume {
                    let id = crate::random_id();
                    self.resumptions = Some(
                        self.server
                            .resumable
                            .register(id.clone(), self.handle.jid.clone()),
                    );
                    conn.queue_raw(&format!(
                        "<enabled xmlns='{}' id='{id}' resume='true' max='{}'/>",
                        sm::NS,
                        settings.resume_timeout.as_secs()
                    ));
                    self.sm = Some(Sm::new(&settings, Some(id)));
                } else {
                    conn.queue_raw("<enabled xmlns='urn:xmpp:sm:3'/>");
                    self.sm = Some(Sm::new(&settings, None));
                }
            }
            "r" => {
                if let Some(sm) = &self.sm {
                    conn.queue_raw(&format!("<a xmlns='{}' h='{}'/>", sm::NS, sm.handled()));
                }
            }
            "a" => {
                let h = element.attr("h").and_then(|h| h.parse::<u32>().ok());
                match (&mut self.sm, h) {
                    (Some(sm), Some(h)) => sm.acked(h).map_err(sm_failure)?,
                    (Some(_), None) => return Err(End::Error(StreamErrorCondition::BadFormat)),
                    (None, _) => {}
                }
                return Ok(());
            }
            "resume" => {
                // Resumption happens before binding, on a new stream.
                conn.queue_raw(&failed("unexpected-request", None));
            }
            _ => return Err(End::Error(StreamErrorCondition::UnsupportedStanzaType)),
        }
        conn.flush().await.map_err(|_| End::Gone)
    }

    /// The connection is gone and the session is resumable: keep buffering, tell the push
    /// module about each unacknowledged message, and wait for the client or the timeout.
    async fn wait(&mut self) -> Result<Resumption, &'static str> {
        let timeout = self
            .server
            .stream_management
            .as_ref()
            .map(|s| s.resume_timeout)
            .unwrap_or_default();
        // Each buffered message is offered to the hook, and kept as the hook left it (the
        // push module records on it which registrations it notified).
        let pending: Vec<Element> = self
            .sm
            .as_ref()
            .map(|sm| sm.unacked().cloned().collect())
            .unwrap_or_default();
        for (index, element) in pending.into_iter().enumerate() {
            let element = self.raise_unacked(element).await;
            if let Some(sm) = &mut self.sm {
                sm.replace_unacked(index, element);
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                _ = self.server.shutdown.cancelled() => return Err("server shutdown"),
                _ = self.handle.control.closed() => return Err("replaced"),
                resumption = next_resumption(&mut self.resumptions) => return Ok(resumption),
                _ = &mut deadline => return Err("resume timeout"),
                outbound = self.rx.recv() => {
                    let Some(element) = outbound else { return Err("closed") };
                    let element = self.raise_unacked(element).await;
                    if let Err(error) = self.track_sent(&element) {
                        tracing::debug!(jid = %self.handle.jid, ?error, "buffer full while waiting for resumption");
                        return Err("buffer overflow");
                    }
                }
            }
        }
    }

    /// Raise the unacknowledged-message hook for a message; returns the message as the
    /// handlers left it.
    async fn raise_unacked(&self, element: Element) -> Element {
        let hooks = self.server.extensions.hooks();
        if element.name() != "message" || hooks.unacked_message.is_empty() {
            return element;
        }
        let mut event = UnackedMessage {
            session: self.handle.jid.clone(),
            stanza: element,
        };
        hooks.unacked_message.run(&self.server, &mut event).await;
        event.stanza
    }

    /// Take over a new connection: acknowledge what the client says it handled, confirm,
    /// and send the rest again (XEP-0198 section 5).
    async fn resume(&mut self, resumption: Resumption) -> Option<Conn> {
        let Resumption { mut conn, h } = resumption;
        let Some(sm) = &mut self.sm else { return None };
        if let Err(error) = sm.acked(h) {
            let end = sm_failure(error);
            if let End::Error(condition) = end {
                conn.fail(condition, &self.domain()).await;
            }
            return None;
        }
        let previd = sm.id.clone().unwrap_or_default();
        conn.queue_raw(&format!(
            "<resumed xmlns='{}' previd='{previd}' h='{}'/>",
            sm::NS,
            sm.handled()
        ));
        for element in sm.unacked() {
            conn.queue(element);
        }
        if sm.unacked().next().is_some() {
            conn.queue_raw("<r xmlns='urn:xmpp:sm:3'/>");
        }
        if conn.flush().await.is_err() {
            // Gone again at once: keep waiting (the caller goes back to `wait`).
            return None;
        }
        tracing::debug!(jid = %self.handle.jid, "session resumed");
        Some(conn)
    }

    /// The session is over: unregister, broadcast unavailable, and route again what the
    /// client never acknowledged (XEP-0198 section 5: as if sent to an unavailable
    /// resource) together with what was still queued.
    async fn finish(mut self) {
        let stale = self
            .server
            .stream_management
            .as_ref()
            .and_then(|s| s.stale_h.as_ref())
            .map(|s| s.geriatric);
        if let Some(sm) = &self.sm
            && let Some(id) = &sm.id
        {
            self.server.resumable.unregister(id, sm.handled(), stale);
        }
        let last = self
            .server
            .sessions
            .unbind(&self.handle.jid, self.handle.id);
        presence::session_ended(&self.server, &self.handle, last).await;
        self.rx.close();
        let mut leftovers = self.sm.as_mut().map(Sm::take_unacked).unwrap_or_default();
        while let Ok(element) = self.rx.try_recv() {
            leftovers.push(element);
        }
        for element in leftovers {
            let Ok(stanza) = Stanza::parse(element) else {
                continue;
            };
            match stanza.kind {
                StanzaKind::Message(_) => self.server.route(Origin::Server, stanza).await,
                StanzaKind::Iq(IqType::Get | IqType::Set) => self.server.bounce(
                    &stanza,
                    ErrorType::Cancel,
                    DefinedCondition::ServiceUnavailable,
                ),
                _ => {}
            }
        }
        tracing::debug!(jid = %self.handle.jid, "session ended");
    }
}

fn failed(condition: &str, h: Option<u32>) -> String {
    let h = h.map(|h| format!(" h='{h}'")).unwrap_or_default();
    format!(
        "<failed xmlns='{}'{h}><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>",
        sm::NS
    )
}

/// XEP-0198 `<failed/>` for a resumption that cannot happen.
pub(crate) fn resume_failed(h: Option<u32>) -> String {
    failed("item-not-found", h)
}

fn sm_failure(error: SmError) -> End {
    match error {
        // MongooseIM closes an overflowing session; the issue asks for policy-violation.
        SmError::BufferOverflow => End::Error(StreamErrorCondition::PolicyViolation),
        SmError::HandledCountTooHigh { h, sent } => {
            tracing::debug!(h, sent, "client acknowledged more than was sent");
            End::Error(StreamErrorCondition::UndefinedCondition)
        }
    }
}

fn is_legacy_session(stanza: &Stanza) -> bool {
    stanza.kind == StanzaKind::Iq(IqType::Set)
        && stanza.element.has_child("session", ns::SESSION)
        && stanza.to.as_ref().is_none_or(|to| to.node().is_none())
}

/// The error reply to a stanza that could not be parsed (never an error to an error:
/// RFC 6120 section 8.3.1).
fn reject(element: Element, type_: ErrorType, condition: DefinedCondition) -> Option<Element> {
    if element.attr("type") == Some("error") {
        return None;
    }
    let mut reply = Element::bare(element.name(), ns::CLIENT);
    if let Some(id) = element.attr("id") {
        set_attr(&mut reply, "id", id.to_owned());
    }
    set_attr(&mut reply, "type", "error");
    reply.append_child(stanza_error(type_, condition));
    Some(reply)
}

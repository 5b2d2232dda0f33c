//! A bound client session (RFC 6120 section 7 onwards): stanzas in from the client are
//! stamped and routed; stanzas queued for it are written out in batches.

use std::sync::Arc;

use herald_stream::{
    Frame, StreamErrorCondition, ns,
    stanza::{IqType, Stanza, StanzaKind, StanzaParseError, iq_result, set_attr, stanza_error},
};
use jid::Jid;
use minidom::Element;
use tokio::sync::mpsc;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::conn::{Conn, ReadError, read_error_condition};
use crate::{Server, presence, sessions::SessionHandle};

/// Most stanzas written before one flush, so a busy session still flushes often.
const WRITE_BATCH: usize = 64;

enum End {
    /// The client closed its stream: close ours.
    Closed,
    /// Send this stream error.
    Error(StreamErrorCondition),
    /// The socket is gone.
    Gone,
}

/// Run the session until its stream ends, then unregister it.
pub(crate) async fn run(
    server: Arc<Server>,
    mut conn: Conn,
    (handle, mut rx): (SessionHandle, mpsc::Receiver<Element>),
) {
    let end = serve(&server, &mut conn, &handle, &mut rx).await;
    let last = server.sessions.unbind(&handle.jid, handle.id);
    presence::session_ended(&server, &handle.jid, last);
    match end {
        End::Closed => {
            conn.queue_raw("</stream:stream>");
            conn.close().await;
        }
        End::Error(condition) => {
            // What was already routed to this session is written before the stream
            // error, so a shutdown or a replaced session loses nothing it had accepted.
            rx.close();
            while let Ok(element) = rx.try_recv() {
                conn.queue(&element);
            }
            conn.fail(condition, handle.jid.domain().as_str()).await;
        }
        End::Gone => {}
    }
    tracing::debug!(jid = %handle.jid, "session ended");
}

async fn serve(
    server: &Server,
    conn: &mut Conn,
    handle: &SessionHandle,
    rx: &mut mpsc::Receiver<Element>,
) -> End {
    loop {
        tokio::select! {
            biased;
            _ = server.shutdown.cancelled() => return End::Error(StreamErrorCondition::SystemShutdown),
            reason = handle.control.closed() => return End::Error(reason),
            outbound = rx.recv() => {
                let Some(first) = outbound else { return End::Gone };
                conn.queue(&first);
                for _ in 1..WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(next) => conn.queue(&next),
                        Err(_) => break,
                    }
                }
                if conn.flush().await.is_err() {
                    return End::Gone;
                }
            }
            frame = conn.next_frame() => {
                match frame {
                    Ok(Frame::Element(element)) => {
                        if let Err(end) = inbound(server, conn, handle, element).await {
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
                                    tracing::debug!(jid = %handle.jid, %error, "read failed");
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
async fn inbound(
    server: &Server,
    conn: &mut Conn,
    handle: &SessionHandle,
    element: Element,
) -> Result<(), End> {
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
            reject(conn, rejected.element, ErrorType::Modify, condition);
            return conn.flush().await.map_err(|_| End::Gone);
        }
    };
    // RFC 6120 section 8.1.2.1: the server stamps the full JID of the sender, whatever
    // the client put there.
    stanza.set_from(Jid::from(handle.jid.clone()));
    if is_legacy_session(&stanza) {
        // RFC 3921 section 3: establishing a session is a no-op now; answer result.
        conn.queue(&iq_result(&stanza, None));
        return conn.flush().await.map_err(|_| End::Gone);
    }
    server
        .route(crate::Origin::Client(&handle.jid), stanza)
        .await;
    Ok(())
}

fn is_legacy_session(stanza: &Stanza) -> bool {
    stanza.kind == StanzaKind::Iq(IqType::Set)
        && stanza.element.has_child("session", ns::SESSION)
        && stanza.to.as_ref().is_none_or(|to| to.node().is_none())
}

/// Answer a stanza that could not be parsed, straight to the client (never an error to an
/// error: RFC 6120 section 8.3.1).
fn reject(conn: &mut Conn, element: Element, type_: ErrorType, condition: DefinedCondition) {
    if element.attr("type") == Some("error") {
        return;
    }
    let mut reply = Element::bare(element.name(), ns::CLIENT);
    if let Some(id) = element.attr("id") {
        set_attr(&mut reply, "id", id.to_owned());
    }
    set_attr(&mut reply, "type", "error");
    reply.append_child(stanza_error(type_, condition));
    conn.queue(&reply);
}

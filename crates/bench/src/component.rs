//! The app server the push scenario publishes to: an external component (XEP-0114) that
//! answers every PubSub publish (XEP-0357 section 5) with a result and records its payload.

use std::{net::SocketAddr, sync::Arc};

use minidom::Element;
use sha1::Digest;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
};

use herald_stream::{Frame, StreamParser};

use crate::{error::BenchError, record::Recorder, xmpp::escape};

const COMPONENT_NS: &str = "jabber:component:accept";
const STREAMS_NS: &str = "http://etherx.jabber.org/streams";

/// Where the component connects and as whom.
#[derive(Clone, Debug)]
pub struct ComponentTarget {
    /// The server's component (XEP-0114) listener, on loopback.
    pub addr: SocketAddr,
    /// The component's domain, the `jid` of every push registration.
    pub domain: String,
    /// The shared secret.
    pub secret: String,
}

/// A connected, authenticated component.
pub struct AppServer {
    tcp: TcpStream,
    parser: StreamParser,
    frames: Vec<Frame>,
}

impl AppServer {
    /// XEP-0114 section 3: open the stream and complete the handshake.
    pub async fn connect(target: &ComponentTarget) -> Result<AppServer, BenchError> {
        let tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let mut app = AppServer {
            tcp,
            parser: StreamParser::new(1 << 20),
            frames: Vec::new(),
        };
        app.tcp
            .write_all(
                format!(
                    "<stream:stream xmlns='{COMPONENT_NS}' xmlns:stream='{STREAMS_NS}' to='{}'>",
                    target.domain
                )
                .as_bytes(),
            )
            .await?;
        let id = match app.next_frame().await? {
            Some(Frame::StreamOpen(header)) => header
                .id
                .ok_or_else(|| BenchError::Component("the stream header has no id".into()))?,
            other => {
                return Err(BenchError::Component(format!(
                    "expected a stream header, got {other:?}"
                )));
            }
        };
        let digest: String = sha1::Sha1::digest(format!("{id}{}", target.secret).as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        app.tcp
            .write_all(format!("<handshake>{digest}</handshake>").as_bytes())
            .await?;
        match app.next_frame().await? {
            Some(Frame::Element(e)) if e.name() == "handshake" => Ok(app),
            Some(Frame::Element(e)) => Err(BenchError::Component(String::from(&e))),
            other => Err(BenchError::Component(format!("{other:?}"))),
        }
    }

    async fn next_frame(&mut self) -> Result<Option<Frame>, BenchError> {
        let mut buf = [0u8; 4096];
        loop {
            if !self.frames.is_empty() {
                return Ok(Some(self.frames.remove(0)));
            }
            let read = tokio::time::timeout(crate::xmpp::STEP_TIMEOUT, self.tcp.read(&mut buf))
                .await
                .map_err(|_| {
                    BenchError::Timeout(crate::xmpp::STEP_TIMEOUT, "component handshake")
                })??;
            if read == 0 {
                return Ok(None);
            }
            self.parser.feed(&buf[..read], &mut self.frames)?;
        }
    }

    /// Connect, retrying for up to 30 s while the server still holds the previous run's
    /// connection (a `conflict` stream error: a busy server has not processed the close yet).
    pub async fn connect_retrying(target: &ComponentTarget) -> Result<AppServer, BenchError> {
        let mut attempts = 0;
        loop {
            match AppServer::connect(target).await {
                Err(BenchError::Component(error))
                    if error.contains("conflict") && attempts < 120 =>
                {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    /// Answer every publish with a result and hand its body to `recorder`, until the
    /// server closes the stream or `stop` fires (then the stream is closed politely).
    pub async fn serve(
        mut self,
        recorder: Arc<Recorder>,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), BenchError> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut out = String::with_capacity(64 * 1024);
        let mut frames = std::mem::take(&mut self.frames);
        loop {
            for frame in frames.drain(..) {
                match frame {
                    Frame::Element(iq) if iq.name() == "iq" && iq.attr("type") == Some("set") => {
                        match last_message_body(&iq) {
                            Some(body) => recorder.observe_copy(&body, publish_copy(&iq)),
                            None => recorder.unrecognised(),
                        }
                        reply_result(&iq, &mut out);
                    }
                    Frame::Element(_) => {}
                    Frame::StreamClose => return Ok(()),
                    Frame::StreamOpen(_) => {}
                }
            }
            if !out.is_empty() {
                self.tcp.write_all(out.as_bytes()).await?;
                out.clear();
            }
            let read = tokio::select! {
                read = self.tcp.read(&mut buf) => read?,
                _ = &mut stop => {
                    // XEP-0114 / RFC 6120 section 4.4: close our stream, wait for the server's.
                    self.tcp.write_all(b"</stream:stream>").await?;
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                        while matches!(self.tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                    })
                    .await;
                    return Ok(());
                }
            };
            if read == 0 {
                return Ok(());
            }
            self.parser.feed(&buf[..read], &mut frames)?;
        }
    }
}

/// XEP-0357 section 5: the summary's `last-message-body` value, wherever the server put
/// the form (`pubsub/publish/item/notification/x/field`).
pub fn last_message_body(iq: &Element) -> Option<String> {
    let field = iq
        .children()
        .find(|c| c.name() == "pubsub")?
        .children()
        .find(|c| c.name() == "publish")?
        .children()
        .find(|c| c.name() == "item")?
        .children()
        .find(|c| c.name() == "notification")?
        .children()
        .find(|c| c.name() == "x")?
        .children()
        .find(|c| c.name() == "field" && c.attr("var") == Some("last-message-body"))?;
    field
        .children()
        .find(|c| c.name() == "value")
        .map(Element::text)
}

/// Which of the recipient's registrations a publish is for, from its node ([`copy_of`]);
/// 0 if it names none.
fn publish_copy(iq: &Element) -> u32 {
    iq.children()
        .find(|c| c.name() == "pubsub")
        .and_then(|pubsub| pubsub.children().find(|c| c.name() == "publish"))
        .and_then(|publish| publish.attr("node"))
        .map_or(0, copy_of)
}

/// Which of its recipient's registrations a node names: `K` of the push scenario's
/// `bench-node-N.K`, 0 for `bench-node-N` or any other node.
pub fn copy_of(node: &str) -> u32 {
    node.rsplit_once('.')
        .and_then(|(_, k)| k.parse().ok())
        .unwrap_or(0)
}

/// An empty result to `iq`, from the address it was sent to.
fn reply_result(iq: &Element, out: &mut String) {
    out.push_str("<iq type='result' id='");
    out.push_str(&escape(iq.attr("id").unwrap_or_default()));
    if let Some(to) = iq.attr("to") {
        out.push_str("' from='");
        out.push_str(&escape(to));
    }
    if let Some(from) = iq.attr("from") {
        out.push_str("' to='");
        out.push_str(&escape(from));
    }
    out.push_str("'/>");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The publish of `docs/modules/push.md` section 5 (XEP-0357 example 9's shape).
    const PUBLISH: &str = "<iq xmlns='jabber:component:accept' type='set' id='p1' from='example.com' to='push.example.com'>\
        <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item>\
        <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'>\
        <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field>\
        <field var='message-count'><value>1</value></field>\
        <field var='last-message-body'><value>hb 7 1234</value></field>\
        </x></notification></item></publish></pubsub></iq>";

    #[test]
    fn the_body_is_read_from_the_summary_form() {
        let iq: Element = PUBLISH.parse().unwrap();
        assert_eq!(last_message_body(&iq).as_deref(), Some("hb 7 1234"));
    }

    #[test]
    fn a_publish_is_answered_from_its_addressee() {
        let iq: Element = PUBLISH.parse().unwrap();
        let mut out = String::new();
        reply_result(&iq, &mut out);
        assert_eq!(
            out,
            "<iq type='result' id='p1' from='push.example.com' to='example.com'/>"
        );
    }
}

//! The byte-level side of one connection (client or component): reading frames, writing XML.

use std::{collections::VecDeque, time::Duration};

use herald_stream::{
    Frame, FrameError, StreamErrorCondition, StreamHeader, StreamParser, ns, transport::Transport,
};
use minidom::Element;
use tokio::io::{AsyncRead, AsyncWriteExt};

/// Bytes read from the transport at once (a TLS record's largest plaintext), into a buffer of
/// the thread's ([`READ_BUF`]), not the connection's.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The buffer every connection polled on this thread reads into. A read is fed to the
    /// connection's parser in the same poll that took it from the socket, so no connection
    /// holds a read buffer of its own, busy or idle: one 4 KiB buffer a connection was the
    /// largest part of an idle session's memory after TLS, and freeing it while idle left a
    /// hole the allocator could not give back (it holds no whole page).
    static READ_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// A connection that has read nothing for this long gives its buffers back while it waits
/// (the parser's scratch buffers and state, an empty write buffer): most sessions sit idle
/// for hours between stanzas, and a busy one keeps its buffers.
const IDLE_RELEASE: Duration = Duration::from_secs(2);

/// A write buffer that grew beyond this while busy is given back after its flush, so that a
/// burst does not stay allocated for the rest of an idle session.
const WRITE_KEEP: usize = 4 * 1024;

/// Why reading stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the TCP connection.
    Eof,
    /// A socket error.
    Io(std::io::Error),
    /// The XML cannot be read on.
    Frame(FrameError),
}

pub(crate) struct Conn {
    pub transport: Transport,
    parser: StreamParser,
    frames: VecDeque<Frame>,
    scratch: Vec<Frame>,
    broken: Option<FrameError>,
    write_buf: Vec<u8>,
    /// Our stream header for the current stream has been sent.
    pub header_sent: bool,
    /// The content namespace of our stream header.
    content_ns: &'static str,
    /// How long one flush may wait for the peer to take the bytes.
    send_timeout: Duration,
    /// The element size limit, kept for the stream after a TLS upgrade.
    max_stanza_size: usize,
}

/// How long a flush may wait for a peer by default: a client that takes nothing for this
/// long is not reading (ejabberd's `send_timeout`, 15 s, is in the same range).
pub(crate) const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

impl Conn {
    pub fn new(transport: Transport, max_stanza_size: usize) -> Conn {
        Conn {
            transport,
            parser: StreamParser::new(max_stanza_size),
            frames: VecDeque::new(),
            scratch: Vec::new(),
            broken: None,
            // Grows with the first write: many sessions send little after their login.
            write_buf: Vec::new(),
            header_sent: false,
            content_ns: ns::CLIENT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_stanza_size,
        }
    }

    /// STARTTLS, the receiving side (RFC 6120 section 5.4.3.3): `<proceed/>`, then the TLS
    /// handshake on the same socket within `within`. The new connection keeps this one's
    /// limits and namespace and starts a fresh stream; `None` when the handshake fails
    /// (nothing more can be said on that socket).
    pub async fn starttls(
        mut self,
        acceptor: &tokio_rustls::TlsAcceptor,
        within: Duration,
    ) -> Option<Conn> {
        self.queue(&Element::bare("proceed", ns::TLS));
        self.flush().await.ok()?;
        let Transport::Plain(tcp) = self.transport else {
            return None;
        };
        let stream = tokio::time::timeout(within, acceptor.accept(tcp))
            .await
            .ok()?
            .ok()?;
        Some(
            Conn::new(Transport::Tls(Box::new(stream)), self.max_stanza_size)
                .with_content_namespace(self.content_ns)
                .with_send_timeout(self.send_timeout),
        )
    }

    /// A connection whose flushes give up after `send_timeout` (a peer that stops reading).
    pub fn with_send_timeout(mut self, send_timeout: Duration) -> Conn {
        self.send_timeout = send_timeout;
        self
    }

    /// A connection whose stream has another content namespace (XEP-0114:
    /// `jabber:component:accept`).
    pub fn with_content_namespace(mut self, content_ns: &'static str) -> Conn {
        self.content_ns = content_ns;
        self
    }

    /// Start a new stream on the same transport (after SASL success, RFC 6120 section 6.4.6).
    pub fn restart(&mut self) {
        self.parser.reset();
        self.frames.clear();
        self.broken = None;
        self.header_sent = false;
    }

    /// The next frame. Cancel-safe: a cancelled call loses no data.
    pub async fn next_frame(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(frame);
            }
            // Elements completed before bad XML are handled; then the stream ends.
            if let Some(error) = self.broken.take() {
                return Err(ReadError::Frame(error));
            }
            let n = match tokio::time::timeout(IDLE_RELEASE, self.read_and_feed()).await {
                Ok(read) => read?,
                Err(_) => {
                    self.release_idle();
                    self.read_and_feed().await?
                }
            };
            if n == 0 {
                return Err(ReadError::Eof);
            }
        }
    }

    /// Wait for bytes; read them into the thread's buffer and feed them to the parser in the
    /// same poll. Cancel-safe: a poll that takes bytes also parses them. The count read (0 at
    /// the end of the stream).
    async fn read_and_feed(&mut self) -> Result<usize, ReadError> {
        std::future::poll_fn(|context| {
            READ_BUF.with_borrow_mut(|buf| {
                let mut read = tokio::io::ReadBuf::new(buf);
                match std::pin::Pin::new(&mut self.transport).poll_read(context, &mut read) {
                    std::task::Poll::Pending => std::task::Poll::Pending,
                    std::task::Poll::Ready(Err(error)) => {
                        std::task::Poll::Ready(Err(ReadError::Io(error)))
                    }
                    std::task::Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n > 0 {
                            let result = self.parser.feed(&buf[..n], &mut self.scratch);
                            self.frames.extend(self.scratch.drain(..));
                            if let Err(error) = result {
                                self.broken = Some(error);
                            }
                        }
                        std::task::Poll::Ready(Ok(n))
                    }
                }
            })
        })
        .await
    }

    /// The peer has been quiet for [`IDLE_RELEASE`]: give back what only reading needs.
    fn release_idle(&mut self) {
        self.parser.release_buffers();
        self.frames.shrink_to_fit();
        self.scratch.shrink_to_fit();
        if self.write_buf.is_empty() {
            self.write_buf = Vec::new();
        }
        crate::memory::released();
    }

    pub fn queue_raw(&mut self, xml: &str) {
        self.write_buf.extend_from_slice(xml.as_bytes());
    }

    /// Queue an element for the peer.
    pub fn queue(&mut self, element: &Element) {
        if let Err(error) = herald_stream::serialise::write(element, &mut self.write_buf) {
            tracing::error!(%error, "cannot serialise an element");
        }
    }

    /// Queue an element for the peer, moved from namespace `from` to `to` on the way (a
    /// stanza for a component's or a server's stream: XEP-0114 section 3, RFC 6120 section
    /// 4.8.3), without building the moved copy.
    pub fn queue_moving(&mut self, element: &Element, from: &str, to: &str) {
        let written =
            herald_stream::serialise::write_moving(element, from, to, &mut self.write_buf);
        if let Err(error) = written {
            tracing::error!(%error, "cannot serialise an element");
        }
    }

    /// Write out what is queued. A peer that does not take it within the send timeout is
    /// not reading: the flush fails with `TimedOut` (the bytes are lost with the connection).
    pub async fn flush(&mut self) -> std::io::Result<()> {
        let send_timeout = self.send_timeout;
        tokio::time::timeout(send_timeout, async {
            if !self.write_buf.is_empty() {
                self.transport.write_all(&self.write_buf).await?;
                self.write_buf.clear();
                if self.write_buf.capacity() > WRITE_KEEP {
                    self.write_buf.shrink_to(WRITE_KEEP);
                }
            }
            self.transport.flush().await
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer took nothing within the send timeout",
            ))
        })
    }

    /// Queue our stream header for a stream addressed to `domain`.
    pub fn queue_header(&mut self, domain: &str, stream_id: &str) {
        self.queue_raw(&StreamHeader::response(
            self.content_ns,
            domain,
            stream_id,
            None,
        ));
        self.header_sent = true;
    }

    /// Send a stream error and close the stream (RFC 6120 section 4.9.1.1), sending our
    /// header first if the peer has not seen one yet (section 4.9.1.2).
    pub async fn fail(&mut self, condition: StreamErrorCondition, domain: &str) {
        if !self.header_sent {
            self.queue_header(domain, &crate::random_id());
        }
        self.queue_raw(&condition.to_xml());
        self.close().await;
    }

    /// Flush and shut the transport down, within a bound so a peer that does not read
    /// cannot hold the task.
    pub async fn close(&mut self) {
        self.close_within(Duration::from_secs(5)).await;
    }

    /// Give up on a connection taken for gone or stuck: what was queued is dropped, the
    /// stream error is offered for at most `grace`, and the transport is shut.
    pub async fn abort(&mut self, condition: StreamErrorCondition, domain: &str, grace: Duration) {
        self.write_buf.clear();
        if !self.header_sent {
            self.queue_header(domain, &crate::random_id());
        }
        self.queue_raw(&condition.to_xml());
        self.close_within(grace).await;
    }

    async fn close_within(&mut self, deadline: Duration) {
        let _ = tokio::time::timeout(deadline, async {
            let _ = self.flush().await;
            let _ = self.transport.shutdown().await;
        })
        .await;
    }
}

/// The stream error for a read error, if one should be sent.
pub(crate) fn read_error_condition(error: &ReadError) -> Option<StreamErrorCondition> {
    match error {
        ReadError::Eof | ReadError::Io(_) => None,
        ReadError::Frame(FrameError::NotWellFormed(_)) => Some(StreamErrorCondition::NotWellFormed),
        ReadError::Frame(FrameError::TooLarge { .. } | FrameError::TooDeep) => {
            Some(StreamErrorCondition::PolicyViolation)
        }
        ReadError::Frame(FrameError::InvalidNamespace) => {
            Some(StreamErrorCondition::InvalidNamespace)
        }
    }
}

/// What became of an element a peer sent that does not parse as a stanza.
pub(crate) enum Rejected {
    /// Not a stanza at all: the stream ends with this error (RFC 6120 section 4.9.3.24,
    /// `unsupported-stanza-type`).
    Stream(StreamErrorCondition),
    /// A stanza with a bad address or type: answered with this error reply, in
    /// `jabber:client` (`None` for an error stanza, which is never answered: RFC 6120 section
    /// 8.3.1).
    Reply(Option<Element>),
}

/// Parse a first-level element from a client or a component (in `jabber:client`): the
/// stanza, or how to reject it. The one place both kinds of stream turn a parse failure into
/// a protocol error.
pub(crate) fn parse_stanza(element: Element) -> Result<herald_stream::Stanza, Rejected> {
    use herald_stream::stanza::{StanzaParseError, set_attr, stanza_error};
    use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};
    let rejected = match herald_stream::Stanza::parse(element) {
        Ok(stanza) => return Ok(stanza),
        Err(rejected) => rejected,
    };
    let condition = match rejected.error {
        StanzaParseError::NotAStanza(_) => {
            return Err(Rejected::Stream(
                StreamErrorCondition::UnsupportedStanzaType,
            ));
        }
        StanzaParseError::BadJid(_) => DefinedCondition::JidMalformed,
        StanzaParseError::BadRequest(_) => DefinedCondition::BadRequest,
    };
    let element = rejected.element;
    if element.attr("type") == Some("error") {
        return Err(Rejected::Reply(None));
    }
    let mut reply = Element::bare(element.name(), herald_stream::ns::CLIENT);
    if let Some(id) = element.attr("id") {
        set_attr(&mut reply, "id", id.to_owned());
    }
    set_attr(&mut reply, "type", "error");
    reply.append_child(stanza_error(ErrorType::Modify, condition));
    Err(Rejected::Reply(Some(reply)))
}

/// Accept the next connection on `listener` (Nagle off), or `None` once the server shuts
/// down. A failed accept (EMFILE and friends) is logged and retried after a short pause
/// instead of spinning: the accept loop of client and component listeners alike.
pub(crate) async fn accept(
    listener: &tokio::net::TcpListener,
    server: &crate::Server,
    what: &'static str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = server.shutdown.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return Some((tcp, peer));
            }
            Err(error) => {
                tracing::warn!(%error, listener = what, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    async fn pair() -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Conn::new(Transport::Plain(server), 65536), client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_past_the_release_reads_the_next_stanzas_whole() {
        let (mut conn, mut client) = pair().await;
        client.write_all(HEADER.as_bytes()).await.unwrap();
        assert!(matches!(
            conn.next_frame().await.unwrap(),
            Frame::StreamOpen(_)
        ));
        // Half a stanza, then quiet for longer than the release: the parser gives its
        // buffers back while it holds a partial element.
        client
            .write_all(b"<message to='a@localhost'><body>first ha")
            .await
            .unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(IDLE_RELEASE * 3).await;
            client
                .write_all(b"lf</body></message><message><body>second</body></message>")
                .await
                .unwrap();
            tokio::time::sleep(IDLE_RELEASE * 3).await;
            client.write_all(b"<presence/>").await.unwrap();
            client
        });
        let bodies: Vec<String> = [
            conn.next_frame().await.unwrap(),
            conn.next_frame().await.unwrap(),
        ]
        .into_iter()
        .map(|frame| match frame {
            Frame::Element(element) => element.get_child("body", ns::CLIENT).unwrap().text(),
            other => panic!("not an element: {other:?}"),
        })
        .collect();
        assert_eq!(bodies, ["first half", "second"]);
        let Frame::Element(presence) = conn.next_frame().await.unwrap() else {
            panic!("not an element");
        };
        assert_eq!(presence.name(), "presence");
        drop(writer.await.unwrap());
        assert!(matches!(conn.next_frame().await, Err(ReadError::Eof)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_cancelled_while_idle_loses_nothing_and_the_next_one_reads() {
        let (mut conn, mut client) = pair().await;
        client.write_all(HEADER.as_bytes()).await.unwrap();
        assert!(matches!(
            conn.next_frame().await.unwrap(),
            Frame::StreamOpen(_)
        ));
        // A session selects between its socket and its queue: the read is dropped after
        // the buffers were given back, several times.
        for _ in 0..3 {
            let waited = tokio::time::timeout(IDLE_RELEASE * 2, conn.next_frame()).await;
            assert!(waited.is_err(), "nothing was sent");
        }
        client
            .write_all(b"<message><body>still here</body></message>")
            .await
            .unwrap();
        let Frame::Element(message) = conn.next_frame().await.unwrap() else {
            panic!("not an element");
        };
        assert_eq!(
            message.get_child("body", ns::CLIENT).unwrap().text(),
            "still here"
        );
    }
}

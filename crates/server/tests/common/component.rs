//! A raw external component (XEP-0114) written from the XEP, speaking XML over a real socket
//! to a service listener: the app server of the push tests, a room or a pubsub service.

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use herald_stream::{Frame, StreamParser};
use minidom::Element;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How long the stream header and the handshake answer may take.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

pub struct Component {
    tcp: TcpStream,
    parser: StreamParser,
    frames: VecDeque<Frame>,
}

/// The handshake digest: hex SHA-1 of the stream id followed by the secret.
pub fn digest(id: &str, secret: &str) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(format!("{id}{secret}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Component {
    /// Connect to the service listener at `addr` as `name` and handshake with `secret`;
    /// panics unless the handshake succeeds.
    pub async fn connect(addr: SocketAddr, name: &str, secret: &str) -> Component {
        let mut component = Component {
            tcp: TcpStream::connect(addr).await.unwrap(),
            parser: StreamParser::new(1 << 20),
            frames: VecDeque::new(),
        };
        component
            .send(&format!(
                "<stream:stream xmlns='jabber:component:accept' \
                 xmlns:stream='http://etherx.jabber.org/streams' to='{name}'>"
            ))
            .await;
        let id = match component.frame(HANDSHAKE_WAIT).await {
            Some(Frame::StreamOpen(header)) => header.id.expect("a stream id"),
            other => panic!("expected a stream header, got {other:?}"),
        };
        component
            .send(&format!("<handshake>{}</handshake>", digest(&id, secret)))
            .await;
        match component.frame(HANDSHAKE_WAIT).await {
            Some(Frame::Element(e)) if e.name() == "handshake" => component,
            other => panic!("handshake failed: {other:?}"),
        }
    }

    pub async fn send(&mut self, xml: &str) {
        self.tcp.write_all(xml.as_bytes()).await.unwrap();
    }

    /// Send, and say whether the server took it (a killed server does not).
    pub async fn try_send(&mut self, xml: &str) -> std::io::Result<()> {
        self.tcp.write_all(xml.as_bytes()).await
    }

    /// The next frame, or `None` if nothing arrives within `wait` or the stream ends.
    pub async fn frame(&mut self, wait: Duration) -> Option<Frame> {
        let mut buf = vec![0u8; 65536];
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Some(frame);
            }
            let n = tokio::time::timeout(wait, self.tcp.read(&mut buf))
                .await
                .ok()?
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            let mut out = Vec::new();
            self.parser.feed(&buf[..n], &mut out).unwrap();
            self.frames.extend(out);
        }
    }

    /// The next element named `name` within `wait`, skipping others.
    pub async fn next_named(&mut self, name: &str, wait: Duration) -> Option<Element> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.frame(left).await {
                Some(Frame::Element(e)) if e.name() == name => return Some(e),
                Some(_) => continue,
                None => return None,
            }
        }
    }
}

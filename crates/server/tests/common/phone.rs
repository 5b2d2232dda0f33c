//! A phone as Conversations, Monal and slixmpp log in: stream management (XEP-0198) with
//! resumption, every `<r/>` answered at once with the count of stanzas handled so far.
//! And a relay that can go silent both ways without closing, as a phone leaving coverage does.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use minidom::Element;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{STARTTLS, TestServer, client::Client};

pub const SM: &str = "urn:xmpp:sm:3";

pub struct Phone {
    pub client: Client,
    /// Stanzas read while waiting for something else, not yet handled.
    pending: std::collections::VecDeque<Element>,
    /// Stanzas received from the server (XEP-0198 section 4: message, presence, iq).
    pub handled: u32,
    /// The resumption id.
    pub id: String,
}

impl Phone {
    /// Log in at the server's STARTTLS listener and enable stream management with resumption.
    pub async fn login(server: &TestServer, user: &str, resource: &str) -> Phone {
        Phone::login_at(server, server.addr(STARTTLS), user, resource).await
    }

    /// The same through another address (a relay in front of the STARTTLS listener).
    pub async fn login_at(
        server: &TestServer,
        addr: SocketAddr,
        user: &str,
        resource: &str,
    ) -> Phone {
        let (local, domain) = user.split_once('@').unwrap();
        let mut client = Client::connect(addr).await;
        client.open(domain).await;
        client.starttls(domain, &server.cert()).await;
        client.scram("SCRAM-SHA-256", local, "pw").await.unwrap();
        client.open(domain).await;
        client.bind(Some(resource)).await;
        Phone::enable(client).await
    }

    /// Enable stream management with resumption on a bound client.
    pub async fn enable(mut client: Client) -> Phone {
        client
            .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            .await;
        let enabled = client.next().await;
        assert_eq!(enabled.name(), "enabled", "{enabled:?}");
        let id = enabled.attr("id").unwrap().to_owned();
        Phone {
            client,
            pending: Default::default(),
            handled: 0,
            id,
        }
    }

    /// Send initial presence and read up to its echo.
    pub async fn available(&mut self) {
        self.client.send("<presence/>").await;
        loop {
            let stanza = self.next_stanza().await;
            if stanza.name() == "presence" && stanza.attr("from") == self.client.jid.as_deref() {
                return;
            }
        }
    }

    /// The next stanza; ack requests on the way are answered.
    pub async fn next_stanza(&mut self) -> Element {
        loop {
            let element = match self.pending.pop_front() {
                Some(element) => element,
                None => self.client.next().await,
            };
            if element.is("r", SM) {
                self.answer().await;
                continue;
            }
            if element.ns() == SM {
                continue;
            }
            if matches!(element.name(), "message" | "presence" | "iq") {
                self.handled += 1;
            }
            return element;
        }
    }

    /// Send an IQ and return the answer (other stanzas before it are skipped).
    pub async fn iq(&mut self, xml: &str) -> Element {
        self.client.send(xml).await;
        loop {
            let stanza = self.next_stanza().await;
            if stanza.name() == "iq" {
                return stanza;
            }
        }
    }

    /// The next `n` messages (other stanzas are skipped).
    pub async fn messages(&mut self, n: usize) -> Vec<Element> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let stanza = self.next_stanza().await;
            if stanza.name() == "message" {
                out.push(stanza);
            }
        }
        out
    }

    /// Answer an ack request with what was handled so far.
    async fn answer(&mut self) {
        let h = self.handled;
        self.client
            .send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>"))
            .await;
    }

    /// Acknowledge everything handled, and wait until the server has taken the ack in (its
    /// answer to the `<r/>` that follows comes after it). Stanzas arriving meanwhile are
    /// kept unhandled for later reads (a phone that dies now never handles them).
    pub async fn ack_all(&mut self) {
        self.answer().await;
        self.client.send("<r xmlns='urn:xmpp:sm:3'/>").await;
        loop {
            let element = self.client.next().await;
            if element.is("a", SM) {
                return;
            }
            if element.is("r", SM) {
                self.answer().await;
                continue;
            }
            assert!(
                matches!(element.name(), "message" | "presence" | "iq"),
                "the stream ended: {element:?}"
            );
            self.pending.push_back(element);
        }
    }

    /// A round trip: the server still serves this stream (answers are read past whatever
    /// else arrives).
    pub async fn ping(&mut self) {
        self.client
            .send("<iq type='get' id='still-there'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        loop {
            let stanza = self.next_stanza().await;
            assert_ne!(stanza.name(), "error", "the stream ended: {stanza:?}");
            if stanza.name() == "iq" && stanza.attr("id") == Some("still-there") {
                assert_eq!(stanza.attr("type"), Some("result"), "{stanza:?}");
                return;
            }
        }
    }
}

/// The body of a message.
pub fn body(message: &Element) -> String {
    message
        .get_child("body", "jabber:client")
        .map(Element::text)
        .unwrap_or_default()
}

/// A TCP relay in front of a server address, for one connection: it forwards both ways
/// until it is frozen, then forwards nothing and reads nothing, and closes nothing.
pub struct Relay {
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&frozen);
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(target).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(forward(client_read, server_write, Arc::clone(&flag)));
            forward(server_read, client_write, flag).await;
        });
        Relay { addr, frozen }
    }

    /// From now on nothing crosses and nothing is read (the sockets stay open).
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16384];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            () = wait_frozen(&frozen) => Ok(0),
        };
        if frozen.load(Ordering::SeqCst) {
            // Hold both sockets open without reading or writing, as a dead radio does.
            std::future::pending::<()>().await;
        }
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn wait_frozen(frozen: &AtomicBool) {
    while !frozen.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! Black-box tests of external components (XEP-0114) over real sockets.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{
    TestServer,
    client::{Client, Closed},
};
use herald_stream::{Frame, StreamParser};
use minidom::Element;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const CONFIG: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "secret"

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "secret"
conflict_behaviour = "kick_old"

[modules.mod_disco]
[modules.mod_ping]
"#;

const DISCONNECT: usize = 0;
const KICK_OLD: usize = 1;

/// A component written from XEP-0114, speaking raw XML.
struct Component {
    tcp: TcpStream,
    parser: StreamParser,
    frames: std::collections::VecDeque<Frame>,
}

fn digest(id: &str, secret: &str) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(format!("{id}{secret}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Component {
    /// Connect and handshake; returns the component, or the stream error it got.
    async fn connect(addr: SocketAddr, domain: &str, secret: &str) -> Result<Component, Closed> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut c = Component {
            tcp,
            parser: StreamParser::new(1 << 20),
            frames: Default::default(),
        };
        c.send(&format!(
            "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
        ))
        .await;
        let id = match c.frame().await {
            Some(Frame::StreamOpen(header)) => {
                assert_eq!(header.from.as_deref(), Some(domain));
                header.id.expect("a stream id")
            }
            other => panic!("expected a header, got {other:?}"),
        };
        c.send(&format!("<handshake>{}</handshake>", digest(&id, secret)))
            .await;
        match c.frame().await {
            Some(Frame::Element(e)) if e.name() == "handshake" => Ok(c),
            Some(Frame::Element(e)) if e.name() == "error" => Err(Closed::StreamError(
                e.children()
                    .next()
                    .map(|c| c.name().to_owned())
                    .unwrap_or_default(),
            )),
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn send(&mut self, xml: &str) {
        self.tcp.write_all(xml.as_bytes()).await.unwrap();
    }

    async fn frame(&mut self) -> Option<Frame> {
        let mut buf = vec![0u8; 65536];
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Some(frame);
            }
            let read = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut buf)).await;
            let n = read.expect("timed out waiting for the server").unwrap_or(0);
            if n == 0 {
                return None;
            }
            let mut out = Vec::new();
            self.parser.feed(&buf[..n], &mut out).unwrap();
            self.frames.extend(out);
        }
    }

    async fn next(&mut self) -> Element {
        match self.frame().await {
            Some(Frame::Element(e)) => e,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    async fn closed(&mut self) -> Closed {
        loop {
            match self.frame().await {
                None => return Closed::Eof,
                Some(Frame::StreamClose) => return Closed::StreamClose,
                Some(Frame::Element(e)) if e.name() == "error" => {
                    return Closed::StreamError(
                        e.children()
                            .next()
                            .map(|c| c.name().to_owned())
                            .unwrap_or_default(),
                    );
                }
                Some(_) => {}
            }
        }
    }
}

fn service(server: &TestServer, index: usize) -> SocketAddr {
    server.running.as_ref().unwrap().service_addrs[index]
}

fn condition(stanza: &Element) -> Option<String> {
    let error = stanza.children().find(|c| c.name() == "error")?;
    error.children().next().map(|c| c.name().to_owned())
}

#[tokio::test]
async fn a_component_with_the_right_secret_completes_the_handshake() {
    let mut server = TestServer::start(CONFIG).await;
    Component::connect(service(&server, DISCONNECT), "push.localhost", "secret")
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_secret_gets_not_authorized() {
    let mut server = TestServer::start(CONFIG).await;
    let refused = Component::connect(service(&server, DISCONNECT), "push.localhost", "guess").await;
    assert_eq!(
        refused.err(),
        Some(Closed::StreamError("not-authorized".into()))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_component_cannot_take_a_served_domain() {
    let mut server = TestServer::start(CONFIG).await;
    let refused = Component::connect(service(&server, DISCONNECT), "localhost", "secret").await;
    assert_eq!(refused.err(), Some(Closed::StreamError("conflict".into())));
    server.shutdown().await;
}

#[tokio::test]
async fn messages_flow_between_a_user_and_a_component() {
    let mut server = TestServer::start(CONFIG).await;
    server.add_user("alice@localhost", "pw").await;
    let mut component = Component::connect(service(&server, DISCONNECT), "bot.localhost", "secret")
        .await
        .unwrap();
    let mut alice = Client::online(&server, "alice@localhost", "pw", "phone", 0).await;
    alice
        .send("<message to='echo@bot.localhost' type='chat' id='c1'><body>ping</body></message>")
        .await;
    let got = component.next().await;
    // The component sees its own namespace and the stamped sender.
    assert!(got.is("message", "jabber:component:accept"), "{got:?}");
    assert_eq!(got.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(
        got.get_child("body", "jabber:component:accept")
            .unwrap()
            .text(),
        "ping"
    );
    component
        .send("<message from='echo@bot.localhost' to='alice@localhost/phone' type='chat'><body>pong</body></message>")
        .await;
    let reply = alice.next_non_presence().await;
    assert!(reply.is("message", "jabber:client"));
    assert_eq!(reply.attr("from"), Some("echo@bot.localhost"));
    assert_eq!(
        reply.get_child("body", "jabber:client").unwrap().text(),
        "pong"
    );
    // A bare-JID message from the component reaches the available resource.
    component.send("<message from='bot.localhost' to='alice@localhost' type='chat'><body>hello</body></message>").await;
    assert_eq!(
        alice
            .next_non_presence()
            .await
            .get_child("body", "jabber:client")
            .unwrap()
            .text(),
        "hello"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_component_can_query_the_server_and_appears_in_its_disco_items() {
    let mut server = TestServer::start(CONFIG).await;
    server.add_user("alice@localhost", "pw").await;
    let mut component =
        Component::connect(service(&server, DISCONNECT), "push.localhost", "secret")
            .await
            .unwrap();
    component.send("<iq type='get' id='q1' from='push.localhost' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    let reply = component.next().await;
    assert_eq!(
        (reply.attr("type"), reply.attr("id"), reply.attr("to")),
        (Some("result"), Some("q1"), Some("push.localhost"))
    );
    let mut alice = Client::login(&server, "alice@localhost", "pw", "r").await;
    alice.send("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    let items = alice.next().await;
    let jids: Vec<_> = items
        .children()
        .flat_map(|q| q.children())
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert_eq!(jids, ["push.localhost"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_stanza_from_a_foreign_domain_ends_the_component_stream_with_invalid_from() {
    let mut server = TestServer::start(CONFIG).await;
    let mut component =
        Component::connect(service(&server, DISCONNECT), "push.localhost", "secret")
            .await
            .unwrap();
    component
        .send("<message from='admin@localhost' to='alice@localhost'><body>spoof</body></message>")
        .await;
    assert_eq!(
        component.closed().await,
        Closed::StreamError("invalid-from".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_disconnected_components_domain_answers_service_unavailable() {
    let mut server = TestServer::start(CONFIG).await;
    server.add_user("alice@localhost", "pw").await;
    let mut component = Component::connect(service(&server, DISCONNECT), "bot.localhost", "secret")
        .await
        .unwrap();
    component.send("</stream:stream>").await;
    assert_eq!(component.closed().await, Closed::StreamClose);
    let mut alice = Client::online(&server, "alice@localhost", "pw", "phone", 0).await;
    // The unregistration follows the close; retry briefly rather than race it.
    let mut bounced = None;
    for attempt in 0..50 {
        alice
            .send(&format!(
                "<message to='bot.localhost' type='chat' id='m{attempt}'><body>x</body></message>"
            ))
            .await;
        let reply = alice.next_non_presence().await;
        if reply.attr("type") == Some("error") {
            bounced = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bounced = bounced.expect("the message was never bounced");
    assert_eq!(condition(&bounced).as_deref(), Some("service-unavailable"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_component_for_a_domain_is_refused_under_disconnect() {
    let mut server = TestServer::start(CONFIG).await;
    let mut first = Component::connect(service(&server, DISCONNECT), "push.localhost", "secret")
        .await
        .unwrap();
    let second = Component::connect(service(&server, DISCONNECT), "push.localhost", "secret").await;
    assert_eq!(second.err(), Some(Closed::StreamError("conflict".into())));
    // The first one still works.
    first.send("<iq type='get' id='q' from='push.localhost' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert_eq!(first.next().await.attr("type"), Some("result"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_component_for_a_domain_replaces_the_first_under_kick_old() {
    let mut server = TestServer::start(CONFIG).await;
    server.add_user("alice@localhost", "pw").await;
    let mut first = Component::connect(service(&server, KICK_OLD), "push.localhost", "secret")
        .await
        .unwrap();
    let mut second = Component::connect(service(&server, KICK_OLD), "push.localhost", "secret")
        .await
        .unwrap();
    assert_eq!(first.closed().await, Closed::StreamError("conflict".into()));
    let mut alice = Client::online(&server, "alice@localhost", "pw", "phone", 0).await;
    alice
        .send("<message to='push.localhost' type='chat'><body>to the new one</body></message>")
        .await;
    assert_eq!(
        second
            .next()
            .await
            .get_child("body", "jabber:component:accept")
            .unwrap()
            .text(),
        "to the new one"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_component_streams_with_system_shutdown() {
    let mut server = TestServer::start(CONFIG).await;
    let mut component =
        Component::connect(service(&server, DISCONNECT), "push.localhost", "secret")
            .await
            .unwrap();
    server.shutdown().await;
    assert_eq!(
        component.closed().await,
        Closed::StreamError("system-shutdown".into())
    );
}

#[tokio::test]
async fn a_component_that_stops_reading_has_senders_told_to_wait_with_their_message_back() {
    let mut server = TestServer::start(CONFIG).await;
    server.add_user("alice@localhost", "pw").await;
    // Connected, and never read again: its socket and then its queue (32 MiB) fill up.
    let _component = Component::connect(service(&server, DISCONNECT), "bot.localhost", "secret")
        .await
        .unwrap();
    let mut alice = Client::online(&server, "alice@localhost", "pw", "phone", 0).await;
    let body = "x".repeat(60_000);
    let mut refused = None;
    for i in 0..2_000 {
        alice
            .send(&format!(
                "<message to='echo@bot.localhost' type='chat' id='m{i}'><body>{body}</body></message>"
            ))
            .await;
        if i % 20 == 19 && !alice.nothing_within(Duration::from_millis(1)).await {
            refused = Some(alice.next_non_presence().await);
            break;
        }
    }
    let refused = refused.expect("the full component's queue refuses a message");
    // XEP-0114 components are not disconnected for being slow: the sender is told to retry
    // later (RFC 6120 section 8.3.3.18), and a message's error carries the message back.
    assert_eq!(
        refused.attr("type"),
        Some("error"),
        "{:?}",
        refused.attr("id")
    );
    assert_eq!(condition(&refused).as_deref(), Some("resource-constraint"));
    let error = refused.get_child("error", "jabber:client").unwrap();
    assert_eq!(error.attr("type"), Some("wait"));
    assert_eq!(refused.attr("from"), Some("echo@bot.localhost"));
    assert_eq!(
        refused.get_child("body", "jabber:client").unwrap().text(),
        body
    );
    server.shutdown().await;
}

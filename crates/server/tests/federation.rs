//! Black-box tests of federation (RFC 6120 server streams, XEP-0220 dialback, SASL
//! EXTERNAL): two herald servers in this process, each serving its own domain on its own
//! loopback port, found through `[s2s] address`; and a raw remote server written from the
//! RFC for what herald must refuse.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{TestServer, client::Client, component::Component};
use herald_stream::{Frame, StreamParser};
use minidom::Element;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const ROSTER: &str = "jabber:iq:roster";
const PUSH: &str = "urn:xmpp:push:0";
const SHARED: &str = "b-dialback-secret";

/// A free port on 127.0.0.1, for a listener whose port the other server must know: below
/// Linux's ephemeral range (32768 and up), so that no test's outgoing connection can take it
/// between this check and the server's bind.
fn free_port() -> u16 {
    loop {
        let mut bytes = [0u8; 2];
        getrandom::fill(&mut bytes).unwrap();
        let port = 20_000 + u16::from_le_bytes(bytes) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The configuration of a server for `domain` whose s2s listener is on `port`, reaching
/// each `(domain, port)` of `peers` on loopback. `extra` is appended to `[s2s]`.
fn config(domain: &str, port: u16, peers: &[(&str, u16)], extra: &str, tail: &str) -> String {
    let address: Vec<String> = peers
        .iter()
        .map(|(host, port)| {
            format!("{{host = \"{host}\", ip_address = \"127.0.0.1\", port = {port}}}")
        })
        .collect();
    format!(
        r#"
[general]
hosts = ["{domain}"]
data_dir = "{{DATA}}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[[listen.s2s]]
port = {port}
ip_address = "127.0.0.1"

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "secret"

[s2s]
address = [{address}]
max_retry_delay = 1
{extra}

[modules.mod_disco]
[modules.mod_ping]
[modules.mod_roster]
[modules.mod_offline]
{tail}
"#,
        address = address.join(", "),
    )
}

struct Pair {
    a: TestServer,
    b: TestServer,
    a_port: u16,
    b_port: u16,
}

const PUSH_MODULE: &str = r#"
[modules.mod_event_pusher.push]
backend = "mnesia"
plugin_module = "mod_event_pusher_push_plugin_defaults"
"#;

/// a.test and b.test, reaching each other by dialback (self-signed certificates).
async fn pair() -> Pair {
    let (a_port, b_port) = (free_port(), free_port());
    let a = TestServer::start(&config(
        "a.test",
        a_port,
        &[("b.test", b_port), ("push.b.test", b_port)],
        "",
        PUSH_MODULE,
    ))
    .await;
    let b = TestServer::start(&config(
        "b.test",
        b_port,
        &[("a.test", a_port)],
        &format!("shared = \"{SHARED}\""),
        "",
    ))
    .await;
    a.add_user("alice@a.test", "a-pass").await;
    b.add_user("bob@b.test", "b-pass").await;
    Pair {
        a,
        b,
        a_port,
        b_port,
    }
}

async fn online(server: &TestServer, user: &str, password: &str) -> Client {
    Client::online(server, user, password, "r", 0).await
}

/// The next element that is not presence, within 10 s.
async fn next_message(client: &mut Client) -> Element {
    client.next_non_presence().await
}

fn error_condition(stanza: &Element) -> Option<String> {
    let error = stanza.children().find(|c| c.name() == "error")?;
    error
        .children()
        .find(|c| c.ns() == STANZAS)
        .map(|c| c.name().to_owned())
}

#[tokio::test]
async fn users_of_two_servers_exchange_messages_both_ways_over_dialback() {
    let p = pair().await;
    let mut alice = online(&p.a, "alice@a.test", "a-pass").await;
    let mut bob = online(&p.b, "bob@b.test", "b-pass").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hello b</body></message>")
        .await;
    let got = next_message(&mut bob).await;
    assert_eq!(got.name(), "message", "{got:?}");
    assert_eq!(got.attr("from"), Some("alice@a.test/r"));
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "hello b"
    );
    bob.send("<message to='alice@a.test/r' type='chat' id='m2'><body>hello a</body></message>")
        .await;
    let got = next_message(&mut alice).await;
    assert_eq!(got.attr("from"), Some("bob@b.test/r"));
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "hello a"
    );
}

#[tokio::test]
async fn iqs_cross_servers_and_the_remote_server_answers_pings_and_disco() {
    let p = pair().await;
    let mut alice = online(&p.a, "alice@a.test", "a-pass").await;
    alice
        .send("<iq type='get' id='p1' to='b.test'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let reply = next_message(&mut alice).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    assert_eq!(reply.attr("from"), Some("b.test"));
    alice
        .send("<iq type='get' id='d1' to='b.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let reply = next_message(&mut alice).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let query = reply.children().next().unwrap();
    assert!(
        query
            .children()
            .any(|c| c.name() == "identity" && c.attr("category") == Some("server"))
    );
    // An IQ to an absent resource of a remote user comes back as service-unavailable.
    alice
        .send("<iq type='get' id='v1' to='bob@b.test/none'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let reply = next_message(&mut alice).await;
    assert_eq!(
        error_condition(&reply).as_deref(),
        Some("service-unavailable")
    );
}

#[tokio::test]
async fn a_full_subscription_handshake_crosses_servers_and_presence_follows() {
    let p = pair().await;
    let mut alice = online(&p.a, "alice@a.test", "a-pass").await;
    let mut bob = online(&p.b, "bob@b.test", "b-pass").await;
    // Roster pushes go to resources that asked for the roster (RFC 6121 section 2.1.6).
    alice
        .send("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    wait_for(&mut alice, |e| {
        e.name() == "iq" && e.attr("id") == Some("r0")
    })
    .await;
    alice
        .send("<presence to='bob@b.test' type='subscribe'/>")
        .await;
    let request = wait_for(&mut bob, |e| {
        e.name() == "presence" && e.attr("type") == Some("subscribe")
    })
    .await;
    assert_eq!(request.attr("from"), Some("alice@a.test"));
    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await;
    // Alice's roster says "to", and bob's available presence follows the approval.
    let push = wait_for(&mut alice, |e| {
        e.name() == "iq" && roster_item(e).is_some_and(|i| i.attr("subscription") == Some("to"))
    })
    .await;
    assert_eq!(roster_item(&push).unwrap().attr("jid"), Some("bob@b.test"));
    let presence = wait_for(&mut alice, |e| {
        e.name() == "presence" && e.attr("from") == Some("bob@b.test/r") && e.attr("type").is_none()
    })
    .await;
    assert!(presence.attr("to").is_some());
    // Bob's presence change reaches alice across.
    bob.send("<presence><show>away</show></presence>").await;
    let away = wait_for(&mut alice, |e| {
        e.name() == "presence" && e.get_child("show", "jabber:client").is_some()
    })
    .await;
    assert_eq!(
        away.get_child("show", "jabber:client").unwrap().text(),
        "away"
    );
    // Bob's roster has alice as "from".
    bob.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let roster = wait_for(&mut bob, |e| e.name() == "iq" && e.attr("id") == Some("r")).await;
    let item = roster
        .get_child("query", ROSTER)
        .unwrap()
        .children()
        .find(|i| i.attr("jid") == Some("alice@a.test"))
        .expect("alice in bob's roster");
    assert_eq!(item.attr("subscription"), Some("from"));
}

fn roster_item(iq: &Element) -> Option<&Element> {
    iq.get_child("query", ROSTER)?.children().next()
}

async fn wait_for(client: &mut Client, want: impl Fn(&Element) -> bool) -> Element {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let element = client.next().await;
            if want(&element) {
                return element;
            }
        }
    })
    .await
    .expect("the awaited stanza within 15 s")
}

#[tokio::test]
async fn a_message_to_an_unreachable_domain_bounces_with_remote_server_not_found() {
    let closed = free_port();
    let server = TestServer::start(&config(
        "a.test",
        free_port(),
        &[("gone.test", closed)],
        "",
        "",
    ))
    .await;
    server.add_user("alice@a.test", "a-pass").await;
    let mut alice = online(&server, "alice@a.test", "a-pass").await;
    for id in ["first", "while-backing-off"] {
        alice
            .send(&format!(
                "<message to='x@gone.test' type='chat' id='{id}'><body>hi</body></message>"
            ))
            .await;
        let bounce = next_message(&mut alice).await;
        assert_eq!(bounce.attr("type"), Some("error"), "{bounce:?}");
        assert_eq!(bounce.attr("id"), Some(id));
        assert_eq!(bounce.attr("from"), Some("x@gone.test"));
        assert_eq!(
            error_condition(&bounce).as_deref(),
            Some("remote-server-not-found")
        );
    }
}

#[tokio::test]
async fn a_denied_domain_is_bounced_without_a_connection() {
    let server = TestServer::start(&config(
        "a.test",
        free_port(),
        &[],
        "default_policy = \"deny\"",
        "",
    ))
    .await;
    server.add_user("alice@a.test", "a-pass").await;
    let mut alice = online(&server, "alice@a.test", "a-pass").await;
    alice
        .send("<message to='x@other.test' type='chat' id='d'><body>hi</body></message>")
        .await;
    let bounce = next_message(&mut alice).await;
    assert_eq!(
        error_condition(&bounce).as_deref(),
        Some("remote-server-not-found")
    );
    let s2s = server
        .running
        .as_ref()
        .unwrap()
        .server
        .s2s()
        .unwrap()
        .clone();
    assert_eq!(s2s.outgoing_links(), 0);
}

// ---------------------------------------------------------------------------------------
// A raw remote server, written from RFC 6120 and XEP-0220, for what herald must refuse.

struct Peer<S> {
    io: S,
    parser: StreamParser,
    frames: std::collections::VecDeque<Frame>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    fn new(io: S) -> Self {
        Peer {
            io,
            parser: StreamParser::new(1 << 20),
            frames: Default::default(),
        }
    }

    async fn send(&mut self, xml: &str) {
        self.io.write_all(xml.as_bytes()).await.unwrap();
        self.io.flush().await.unwrap();
    }

    async fn frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if let Some(frame) = self.frames.pop_front() {
                    return Some(frame);
                }
                let mut buf = [0u8; 4096];
                let n = self.io.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                let mut out = Vec::new();
                let _ = self.parser.feed(&buf[..n], &mut out);
                self.frames.extend(out);
            }
        })
        .await
        .ok()
        .flatten()
    }

    async fn element(&mut self) -> Element {
        match self.frame().await {
            Some(Frame::Element(e)) => e,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    /// Open a stream from `from` to `to`; the stream id and the features.
    async fn open(&mut self, from: &str, to: &str) -> (String, Element) {
        self.parser.reset();
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
             xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' \
             from='{from}' to='{to}' version='1.0'>"
        ))
        .await;
        let id = match self.frame().await {
            Some(Frame::StreamOpen(header)) => header.id.expect("a stream id"),
            other => panic!("expected a stream header, got {other:?}"),
        };
        (id, self.element().await)
    }

    /// The stream error that ends the stream.
    async fn stream_error(&mut self) -> String {
        loop {
            match self.frame().await {
                Some(Frame::Element(e)) if e.name() == "error" => {
                    return e.children().next().unwrap().name().to_owned();
                }
                Some(_) => continue,
                None => panic!("the stream ended without an error"),
            }
        }
    }
}

/// The dialback key b.test's authoritative server (configured with [`SHARED`]) gives.
fn key(receiving: &str, originating: &str, stream_id: &str) -> String {
    use hmac::{KeyInit, Mac};
    use sha2::Digest;
    let secret: String = sha2::Sha256::digest(SHARED.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{receiving} {originating} {stream_id}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A raw peer authenticated to a.test as b.test by dialback (the key is b.test's, which
/// a.test verifies with the real b.test server).
async fn authenticated_peer(p: &Pair) -> Peer<TcpStream> {
    let a_addr: SocketAddr = p.a.running.as_ref().unwrap().s2s_addrs[0];
    let mut peer = Peer::new(TcpStream::connect(a_addr).await.unwrap());
    let (id, features) = peer.open("b.test", "a.test").await;
    assert!(
        features
            .children()
            .any(|c| c.name() == "dialback" && c.ns() == "urn:xmpp:features:dialback"),
        "{features:?}"
    );
    peer.send(&format!(
        "<db:result from='b.test' to='a.test'>{}</db:result>",
        key("a.test", "b.test", &id)
    ))
    .await;
    let answer = peer.element().await;
    assert_eq!(answer.name(), "result");
    assert_eq!(answer.attr("type"), Some("valid"), "{answer:?}");
    peer
}

#[tokio::test]
async fn a_remote_server_authenticated_by_dialback_delivers_and_a_forged_from_ends_its_stream() {
    let p = pair().await;
    let mut alice = online(&p.a, "alice@a.test", "a-pass").await;
    let mut peer = authenticated_peer(&p).await;
    peer.send("<message from='carol@b.test/x' to='alice@a.test' type='chat'><body>via raw</body></message>")
        .await;
    let got = next_message(&mut alice).await;
    assert_eq!(got.attr("from"), Some("carol@b.test/x"));
    // RFC 6120 section 4.9.3.9: a from at a domain not authenticated on this stream.
    peer.send("<message from='mallory@c.test' to='alice@a.test' type='chat'><body>forged</body></message>")
        .await;
    assert_eq!(peer.stream_error().await, "invalid-from");
    assert!(alice.nothing_within(Duration::from_millis(300)).await);
}

#[tokio::test]
async fn a_stanza_without_addresses_or_for_a_foreign_domain_ends_the_stream() {
    let p = pair().await;
    let mut peer = authenticated_peer(&p).await;
    peer.send("<message to='alice@a.test' type='chat'><body>no from</body></message>")
        .await;
    assert_eq!(peer.stream_error().await, "improper-addressing");
    let mut peer = authenticated_peer(&p).await;
    peer.send("<message from='x@b.test' to='alice@elsewhere.test'><body>relay?</body></message>")
        .await;
    assert_eq!(peer.stream_error().await, "host-unknown");
}

#[tokio::test]
async fn a_wrong_dialback_key_is_refused_and_stanzas_before_authentication_end_the_stream() {
    let p = pair().await;
    let a_addr: SocketAddr = p.a.running.as_ref().unwrap().s2s_addrs[0];
    let mut peer = Peer::new(TcpStream::connect(a_addr).await.unwrap());
    let (_, _) = peer.open("b.test", "a.test").await;
    peer.send("<db:result from='b.test' to='a.test'>0123456789abcdef</db:result>")
        .await;
    let answer = peer.element().await;
    assert_eq!(answer.attr("type"), Some("invalid"), "{answer:?}");
    peer.send("<message from='x@b.test' to='alice@a.test'><body>unauthenticated</body></message>")
        .await;
    assert_eq!(peer.stream_error().await, "not-authorized");
}

#[tokio::test]
async fn a_stream_to_a_domain_not_served_here_is_refused_with_host_unknown() {
    let p = pair().await;
    let a_addr: SocketAddr = p.a.running.as_ref().unwrap().s2s_addrs[0];
    let mut peer = Peer::new(TcpStream::connect(a_addr).await.unwrap());
    peer.send(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' from='b.test' to='nowhere.test' version='1.0'>",
    )
    .await;
    assert_eq!(peer.stream_error().await, "host-unknown");
}

// ---------------------------------------------------------------------------------------
// Push to an app server on another server.

struct Remote {
    p: Pair,
    app: Component,
}

async fn remote_app_server() -> Remote {
    let p = pair().await;
    let service = p.b.running.as_ref().unwrap().service_addrs[0];
    let app = Component::connect(service, "push.b.test", "secret").await;
    let mut alice = Client::login(&p.a, "alice@a.test", "a-pass", "phone").await;
    alice
        .send(&format!(
            "<iq type='set' id='en'><enable xmlns='{PUSH}' jid='push.b.test' node='n1'/></iq>"
        ))
        .await;
    let reply = next_message(&mut alice).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    alice.send("</stream:stream>").await;
    alice.closed().await;
    Remote { p, app }
}

async fn publish(app: &mut Component) -> Element {
    match app.frame(Duration::from_secs(15)).await {
        Some(Frame::Element(iq)) => iq,
        other => panic!("expected a publish, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_to_an_offline_user_is_pushed_once_to_a_remote_app_server() {
    let mut r = remote_app_server().await;
    let mut bob = online(&r.p.b, "bob@b.test", "b-pass").await;
    bob.send("<message to='alice@a.test' type='chat' id='m'><body>wake up</body></message>")
        .await;
    let iq = publish(&mut r.app).await;
    assert_eq!(iq.attr("from"), Some("a.test"));
    assert_eq!(iq.attr("to"), Some("push.b.test"));
    let text = String::from(&iq);
    assert!(
        text.contains("node='n1'") || text.contains("node=\"n1\""),
        "{text}"
    );
    assert!(
        text.contains("wake up"),
        "the summary carries the body: {text}"
    );
    assert!(
        text.contains("bob@b.test"),
        "the summary names the sender: {text}"
    );
    r.app
        .send(&format!(
            "<iq type='result' id='{}' from='push.b.test' to='a.test'/>",
            iq.attr("id").unwrap()
        ))
        .await;
    // Exactly one publish.
    assert!(r.app.frame(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn a_cancel_error_from_a_remote_app_server_disables_the_registration() {
    let mut r = remote_app_server().await;
    let mut bob = online(&r.p.b, "bob@b.test", "b-pass").await;
    bob.send("<message to='alice@a.test' type='chat' id='m'><body>one</body></message>")
        .await;
    let iq = publish(&mut r.app).await;
    r.app
        .send(&format!(
            "<iq type='error' id='{}' from='push.b.test' to='a.test'>\
             <error type='cancel'><item-not-found xmlns='{STANZAS}'/></error></iq>",
            iq.attr("id").unwrap()
        ))
        .await;
    // The disabling happens when the error arrives; the next message finds nothing to push.
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.send("<message to='alice@a.test' type='chat' id='m2'><body>two</body></message>")
        .await;
    assert!(r.app.frame(Duration::from_millis(700)).await.is_none());
}

#[tokio::test]
async fn a_remote_server_that_goes_away_does_not_disable_the_registration() {
    let mut r = remote_app_server().await;
    r.p.a.add_user("carol@a.test", "c-pass").await;
    let mut carol = online(&r.p.a, "carol@a.test", "c-pass").await;
    // b.test goes away: the publish for the next message cannot be delivered.
    r.p.b.shutdown().await;
    drop(r.app);
    carol
        .send(
            "<message to='alice@a.test' type='chat' id='c1'><body>while b is down</body></message>",
        )
        .await;
    // The publish bounces with remote-server-not-found (counted as unreachable, not a
    // cancel from the app server); give it time to happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // b.test comes back on the same port; after the retry delay (max_retry_delay = 1 s) the
    // next message is pushed: the registration was kept. (Its port may be held a moment by
    // another test's outgoing connection, which the kernel may give any free port: retry.)
    let b_config = config(
        "b.test",
        r.p.b_port,
        &[("a.test", r.p.a_port)],
        &format!("shared = \"{SHARED}\""),
        "",
    );
    let mut attempts = 0;
    let b = loop {
        match TestServer::try_start(&b_config).await {
            Ok(b) => break b,
            Err(error) if attempts < 50 => {
                attempts += 1;
                eprintln!("b.test cannot start yet ({error}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{error}"),
        }
    };
    let service = b.running.as_ref().unwrap().service_addrs[0];
    let mut app = Component::connect(service, "push.b.test", "secret").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    carol
        .send("<message to='alice@a.test' type='chat' id='c2'><body>b is back</body></message>")
        .await;
    // The registration was kept, and the notification that could not go while b.test was
    // down was retried: both arrive.
    let first = String::from(&publish(&mut app).await);
    let second = String::from(&publish(&mut app).await);
    let both = format!("{first}{second}");
    assert!(both.contains("b is back"), "{both}");
    assert!(both.contains("while b is down"), "retried: {both}");
}

// ---------------------------------------------------------------------------------------
// SASL EXTERNAL with certificates from a test CA (RFC 6120 section 6.3.4, XEP-0178).

struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            ca: rcgen::Issuer::new(params, key),
        }
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// A certificate for `domain` issued by the CA: (certfile, keyfile).
    fn issue(&self, domain: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![domain.to_owned()])
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        let certfile = self.dir.path().join(format!("{domain}.pem"));
        let keyfile = self.dir.path().join(format!("{domain}.key"));
        std::fs::write(&certfile, cert.pem()).unwrap();
        std::fs::write(&keyfile, key.serialize_pem()).unwrap();
        (
            certfile.display().to_string(),
            keyfile.display().to_string(),
        )
    }

    /// A self-signed certificate for `domain`, which the CA did not issue.
    fn self_signed(&self, domain: &str) -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec![domain.to_owned()]).unwrap();
        let certfile = self.dir.path().join(format!("self-{domain}.pem"));
        let keyfile = self.dir.path().join(format!("self-{domain}.key"));
        std::fs::write(&certfile, certified.cert.pem()).unwrap();
        std::fs::write(&keyfile, certified.signing_key.serialize_pem()).unwrap();
        (
            certfile.display().to_string(),
            keyfile.display().to_string(),
        )
    }

    fn s2s_section(&self, domain: &str) -> String {
        let (cert, key) = self.issue(domain);
        format!(
            "certfile = \"{cert}\"\nkeyfile = \"{key}\"\ncafile = \"{}\"",
            self.ca_file()
        )
    }
}

/// A TLS client that trusts anything (the test looks at what herald offers, not at herald's
/// certificate) and presents `certfile`.
fn tls_client(certfile: &str, keyfile: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    #[derive(Debug)]
    struct Any;
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(keyfile).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(std::sync::Arc::new(Any))
    .with_client_auth_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

fn offers_external(features: &Element) -> bool {
    features
        .children()
        .any(|c| c.name() == "mechanisms" && c.children().any(|m| m.text() == "EXTERNAL"))
}

/// Open a stream to a.test as b.test, upgrade with STARTTLS presenting (certfile, keyfile),
/// and return the peer with the features after TLS.
async fn tls_peer(
    addr: SocketAddr,
    (certfile, keyfile): (String, String),
) -> (Peer<tokio_rustls::client::TlsStream<TcpStream>>, Element) {
    let mut plain = Peer::new(TcpStream::connect(addr).await.unwrap());
    let (_, features) = plain.open("b.test", "a.test").await;
    assert!(
        features.children().any(|c| c.name() == "starttls"),
        "{features:?}"
    );
    assert!(!offers_external(&features), "no EXTERNAL before TLS");
    plain
        .send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    assert_eq!(plain.element().await.name(), "proceed");
    let name = rustls_pki_types::ServerName::try_from("a.test").unwrap();
    let tls = tls_client(&certfile, &keyfile)
        .connect(name, plain.io)
        .await
        .unwrap();
    let mut peer = Peer::new(tls);
    let (_, features) = peer.open("b.test", "a.test").await;
    (peer, features)
}

#[tokio::test]
async fn a_remote_server_with_a_certificate_from_a_trusted_ca_authenticates_with_sasl_external() {
    let pki = Pki::new();
    let a = TestServer::start(&config(
        "a.test",
        free_port(),
        &[],
        &pki.s2s_section("a.test"),
        "",
    ))
    .await;
    a.add_user("alice@a.test", "a-pass").await;
    let mut alice = online(&a, "alice@a.test", "a-pass").await;
    let addr = a.running.as_ref().unwrap().s2s_addrs[0];
    let (mut peer, features) = tls_peer(addr, pki.issue("b.test")).await;
    assert!(offers_external(&features), "{features:?}");
    // XEP-0178: the authorization identity is the peer's domain, base64.
    peer.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>Yi50ZXN0</auth>",
    )
    .await;
    assert_eq!(peer.element().await.name(), "success");
    peer.open("b.test", "a.test").await;
    peer.send("<message from='bob@b.test/x' to='alice@a.test' type='chat'><body>certified</body></message>")
        .await;
    let got = next_message(&mut alice).await;
    assert_eq!(got.attr("from"), Some("bob@b.test/x"));
}

#[tokio::test]
async fn sasl_external_is_not_offered_for_a_certificate_the_ca_did_not_issue_or_for_another_domain()
{
    let pki = Pki::new();
    let a = TestServer::start(&config(
        "a.test",
        free_port(),
        &[],
        &pki.s2s_section("a.test"),
        "",
    ))
    .await;
    let addr = a.running.as_ref().unwrap().s2s_addrs[0];
    let (_, features) = tls_peer(addr, pki.self_signed("b.test")).await;
    assert!(!offers_external(&features), "{features:?}");
    assert!(features.children().any(|c| c.name() == "dialback"));
    let (mut peer, features) = tls_peer(addr, pki.issue("c.test")).await;
    assert!(
        !offers_external(&features),
        "a certificate for c.test, a stream from b.test"
    );
    // Asking anyway fails.
    peer.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
        .await;
    assert_eq!(peer.element().await.name(), "failure");
}

#[tokio::test]
async fn two_servers_with_certificates_from_a_trusted_ca_federate_without_dialback() {
    let pki = Pki::new();
    let (a_port, b_port, nowhere) = (free_port(), free_port(), free_port());
    // a.test cannot reach b.test at all (its address points at a closed port), so a stream
    // from b.test can only be authenticated by its certificate: dialback would need a.test
    // to ask b.test.
    let a = TestServer::start(&config(
        "a.test",
        a_port,
        &[("b.test", nowhere)],
        &pki.s2s_section("a.test"),
        "",
    ))
    .await;
    let b = TestServer::start(&config(
        "b.test",
        b_port,
        &[("a.test", a_port)],
        &pki.s2s_section("b.test"),
        "",
    ))
    .await;
    a.add_user("alice@a.test", "a-pass").await;
    b.add_user("bob@b.test", "b-pass").await;
    let mut alice = online(&a, "alice@a.test", "a-pass").await;
    let mut bob = online(&b, "bob@b.test", "b-pass").await;
    bob.send("<message to='alice@a.test' type='chat' id='x'><body>over TLS, by certificate</body></message>")
        .await;
    let got = next_message(&mut alice).await;
    assert_eq!(got.attr("from"), Some("bob@b.test/r"));
}

#[tokio::test]
async fn with_use_starttls_required_a_stream_without_tls_cannot_authenticate() {
    let p_port = free_port();
    let a = TestServer::start(&config(
        "a.test",
        p_port,
        &[],
        "use_starttls = \"required\"",
        "",
    ))
    .await;
    let addr = a.running.as_ref().unwrap().s2s_addrs[0];
    let mut peer = Peer::new(TcpStream::connect(addr).await.unwrap());
    let (_, features) = peer.open("b.test", "a.test").await;
    let starttls = features
        .children()
        .find(|c| c.name() == "starttls")
        .expect("starttls offered");
    assert!(starttls.children().any(|c| c.name() == "required"));
    assert!(!features.children().any(|c| c.name() == "dialback"));
    peer.send("<db:result from='b.test' to='a.test'>abc</db:result>")
        .await;
    assert_eq!(peer.stream_error().await, "policy-violation");
}

#[tokio::test]
async fn features_and_dialback_answers_carry_the_prefixes_of_the_stream_header() {
    // ejabberd 23 ignores `<features xmlns='http://etherx.jabber.org/streams'>` and
    // `<result xmlns='jabber:server:dialback'>`: the same elements must be written as
    // `<stream:features>` and `<db:result>`.
    let p = pair().await;
    let a_addr: SocketAddr = p.a.running.as_ref().unwrap().s2s_addrs[0];
    let mut tcp = TcpStream::connect(a_addr).await.unwrap();
    tcp.write_all(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
          xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' \
          from='b.test' to='a.test' version='1.0'>",
    )
    .await
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("</stream:features>") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("<stream:features>"), "{seen}");
    let id = seen
        .split("id='")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_owned();
    tcp.write_all(
        format!(
            "<db:result from='b.test' to='a.test'>{}</db:result>",
            key("a.test", "b.test", &id)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    while !answer.contains("/>") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("<db:result "), "{answer}");
    assert!(answer.contains("type='valid'"), "{answer}");
}

#[tokio::test]
async fn stanzas_wait_bounded_while_a_link_connects_and_bounce_with_remote_server_timeout() {
    // A "server" that accepts TCP and never says a word: the link stays connecting.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let server = TestServer::start(&config(
        "a.test",
        free_port(),
        &[("slow.test", silent_port)],
        "[s2s.outgoing]\nmax_queue = 2\nconnection_timeout = 1500",
        "",
    ))
    .await;
    server.add_user("alice@a.test", "a-pass").await;
    let mut alice = online(&server, "alice@a.test", "a-pass").await;
    for id in ["q1", "q2", "q3"] {
        alice
            .send(&format!(
                "<message to='x@slow.test' type='chat' id='{id}'><body>hi</body></message>"
            ))
            .await;
    }
    // The third finds the queue full at once; the routing never waited.
    let full = next_message(&mut alice).await;
    assert_eq!(full.attr("id"), Some("q3"));
    assert_eq!(
        error_condition(&full).as_deref(),
        Some("resource-constraint")
    );
    // The two queued ones bounce when the connection attempt times out.
    let mut timed_out = Vec::new();
    for _ in 0..2 {
        let bounce = next_message(&mut alice).await;
        assert_eq!(
            error_condition(&bounce).as_deref(),
            Some("remote-server-timeout")
        );
        timed_out.push(bounce.attr("id").unwrap().to_owned());
    }
    assert_eq!(timed_out, ["q1", "q2"], "bounced in order");
    held.abort();
}

#[tokio::test]
async fn an_idle_outgoing_link_is_closed_and_a_new_one_opens_for_the_next_stanza() {
    let (a_port, b_port) = (free_port(), free_port());
    let a = TestServer::start(&config(
        "a.test",
        a_port,
        &[("b.test", b_port)],
        "[s2s.outgoing]\nidle_timeout = 300",
        "",
    ))
    .await;
    let b = TestServer::start(&config("b.test", b_port, &[("a.test", a_port)], "", "")).await;
    a.add_user("alice@a.test", "a-pass").await;
    b.add_user("bob@b.test", "b-pass").await;
    let mut alice = online(&a, "alice@a.test", "a-pass").await;
    let mut bob = online(&b, "bob@b.test", "b-pass").await;
    let s2s = a.running.as_ref().unwrap().server.s2s().unwrap().clone();
    for body in ["first", "after idle"] {
        alice
            .send(&format!(
                "<message to='bob@b.test' type='chat'><body>{body}</body></message>"
            ))
            .await;
        let got = next_message(&mut bob).await;
        assert_eq!(got.get_child("body", "jabber:client").unwrap().text(), body);
        assert_eq!(s2s.outgoing_links(), 1);
        tokio::time::timeout(Duration::from_secs(5), async {
            while s2s.outgoing_links() != 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the idle link closes");
    }
}

#[tokio::test]
async fn direct_tls_links_work_when_the_address_says_tls() {
    let (a_port, b_port) = (free_port(), free_port());
    let a_config = config("a.test", a_port, &[("b.test", b_port)], "", "").replace(
        &format!("[[listen.s2s]]\nport = {a_port}\nip_address = \"127.0.0.1\"\n"),
        &format!(
            "[[listen.s2s]]\nport = {a_port}\nip_address = \"127.0.0.1\"\ntls.mode = \"tls\"\n"
        ),
    );
    let b_config = config("b.test", b_port, &[], "", "").replace(
        "address = []",
        &format!("address = [{{host = \"a.test\", ip_address = \"127.0.0.1\", port = {a_port}, tls = true}}]"),
    );
    let a = TestServer::start(&a_config).await;
    let b = TestServer::start(&b_config).await;
    a.add_user("alice@a.test", "a-pass").await;
    b.add_user("bob@b.test", "b-pass").await;
    let mut alice = online(&a, "alice@a.test", "a-pass").await;
    let mut bob = online(&b, "bob@b.test", "b-pass").await;
    // b.test -> a.test over direct TLS; a.test verifies b.test's key over STARTTLS.
    bob.send("<message to='alice@a.test' type='chat'><body>direct</body></message>")
        .await;
    let got = next_message(&mut alice).await;
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "direct"
    );
}

#[tokio::test]
async fn where_the_receiving_server_offers_bidi_herald_asks_for_it_and_takes_its_stanzas_on_the_same_stream()
 {
    // The receiving server of b.test is played by this test: it offers XEP-0288.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server =
        TestServer::start(&config("a.test", free_port(), &[("b.test", port)], "", "")).await;
    server.add_user("alice@a.test", "a-pass").await;
    let mut alice = online(&server, "alice@a.test", "a-pass").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='out'><body>to b</body></message>")
        .await;
    let (tcp, _) = listener.accept().await.unwrap();
    let mut peer = Peer::new(tcp);
    match peer.frame().await {
        Some(Frame::StreamOpen(header)) => assert_eq!(header.to.as_deref(), Some("b.test")),
        other => panic!("expected a stream header, got {other:?}"),
    }
    peer.send(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' \
         from='b.test' to='a.test' id='bidi-stream' version='1.0'><stream:features>\
         <dialback xmlns='urn:xmpp:features:dialback'/><bidi xmlns='urn:xmpp:features:bidi'/>\
         </stream:features>",
    )
    .await;
    let request = peer.element().await;
    assert!(request.is("bidi", "urn:xmpp:bidi"), "{request:?}");
    let result = peer.element().await;
    assert_eq!(result.name(), "result");
    peer.send("<db:result from='b.test' to='a.test' type='valid'/>")
        .await;
    let message = peer.element().await;
    assert_eq!(message.attr("id"), Some("out"));
    // The same stream carries b.test's stanzas to a.test.
    peer.send("<message from='bob@b.test/x' to='alice@a.test' type='chat'><body>back over bidi</body></message>")
        .await;
    let got = next_message(&mut alice).await;
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "back over bidi"
    );
    // ...but only from the domain herald connected to.
    peer.send(
        "<message from='mallory@c.test' to='alice@a.test' type='chat'><body>x</body></message>",
    )
    .await;
    assert_eq!(peer.stream_error().await, "invalid-from");
}

#[tokio::test]
async fn a_stream_cannot_make_herald_open_dialback_verifications_without_bound() {
    // slow.test's server accepts TCP and never answers: each verification hangs.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let server = TestServer::start(&config(
        "a.test",
        free_port(),
        &[("slow.test", silent_port)],
        "",
        "",
    ))
    .await;
    let a_addr: SocketAddr = server.running.as_ref().unwrap().s2s_addrs[0];
    let mut peer = Peer::new(TcpStream::connect(a_addr).await.unwrap());
    peer.open("slow.test", "a.test").await;
    for _ in 0..9 {
        peer.send("<db:result from='slow.test' to='a.test'>00</db:result>")
            .await;
    }
    assert_eq!(peer.stream_error().await, "policy-violation");
    held.abort();
}

#[tokio::test]
async fn garbage_on_the_server_port_ends_that_stream_and_nothing_else() {
    let p = pair().await;
    let a_addr: SocketAddr = p.a.running.as_ref().unwrap().s2s_addrs[0];
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='a.test'><a><<<",
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='b.test' to='a.test' version='1.0'><db:result from='b.test' to='a.test'>k</db:result>",
    ] {
        let mut tcp = TcpStream::connect(a_addr).await.unwrap();
        tcp.write_all(garbage).await.unwrap();
        let mut buf = vec![0u8; 8192];
        // The stream ends (with an error where one can be written), never hangs.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tcp.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
        })
        .await;
    }
    // Federation still works.
    let mut alice = online(&p.a, "alice@a.test", "a-pass").await;
    let mut bob = online(&p.b, "bob@b.test", "b-pass").await;
    alice
        .send("<message to='bob@b.test' type='chat'><body>still here</body></message>")
        .await;
    let got = next_message(&mut bob).await;
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "still here"
    );
}

//! Hostile bytes on the negotiation state machine (client streams) and the component
//! handshake, over real sockets: every connection ends within its deadlines, with a stream
//! error or a close, no task panics, and the server goes on serving.
//!
//! Deterministic fuzzing for the normal test suite: valid transcripts (stream header, SASL
//! PLAIN, restart, bind, stream management, stanzas; a component's header and handshake) cut
//! at a random point and followed by mutations, sent in random chunks, from a fixed-seed
//! xorshift. `fuzz/fuzz_targets/c2s_negotiation.rs` is the open-ended version.

mod common;

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use common::{TestServer, client::Client};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

static PANICS: AtomicUsize = AtomicUsize::new(0);

const CONFIG: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
max_stanza_size = 4096
state_timeout = 1000
handshake_timeout = 2

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "secret"
state_timeout = 1000

[modules.mod_disco]
[modules.mod_ping]
[modules.mod_roster]
[modules.mod_offline]
[modules.mod_register]
registration_timeout = "infinity"
[modules.mod_stream_management]
[modules.mod_fail2ban]
c2s_max_auth_failures = 1000000
[modules.mod_event_pusher.push]
[modules.mod_carboncopy]
[modules.mod_csi]
[modules.mod_blocking]
[modules.mod_pep]
[modules.mod_vcard]
[modules.mod_version]
"#;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// A client's whole session, valid (PLAIN for alice/pw: `\0alice\0pw`), in the phases a client
/// waits between (RFC 6120 section 6.4.6: the stream restarts after `<success/>`).
fn c2s_transcript() -> Vec<String> {
    vec![
        format!(
            "{HEADER}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>"
        ),
        format!(
            "{HEADER}<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>\
             <enable xmlns='urn:xmpp:sm:3' resume='true'/><presence><priority>1</priority></presence>\
             <iq type='set' id='p'><enable xmlns='urn:xmpp:push:0' jid='push.localhost' node='n'/></iq>\
             <message to='bob@localhost' type='chat'><body>hi</body></message>\
             <iq type='get' id='q'><query xmlns='jabber:iq:roster'/></iq>\
             <iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq><inactive xmlns='urn:xmpp:csi:0'/>\
             <iq type='set' id='k'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>\
             <iq type='set' id='u'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item id='i'><x xmlns='urn:x'/></item></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='pubsub#access_model'><value>open</value></field></x></publish-options></pubsub></iq>\
             <iq type='get' id='g' to='bob@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='n' max_items='2'/></pubsub></iq>\
             <iq type='get' id='o'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='n'/></pubsub></iq>\
             <iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>A</FN></vCard></iq><active xmlns='urn:xmpp:csi:0'/>\
             <presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>\
             <r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='2'/>\
             <resume xmlns='urn:xmpp:sm:3' previd='x' h='1'/></stream:stream>"
        ),
    ]
}

fn component_transcript() -> Vec<String> {
    vec![
        "<stream:stream xmlns='jabber:component:accept' \
         xmlns:stream='http://etherx.jabber.org/streams' to='push.localhost'>"
            .to_owned(),
        "<handshake>da39a3ee5e6b4b0d3255bfef95601890afd80709</handshake>\
         <iq type='result' id='x' from='push.localhost' to='localhost'/>\
         <message from='a@push.localhost' to='alice@localhost'><body>x</body></message>"
            .to_owned(),
    ]
}

const TOKENS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "'",
    "=",
    "&",
    "&amp;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?",
    "xmlns='",
    "xmlns:stream=",
    "<stream:stream ",
    "</stream:stream>",
    "<iq type='set'>",
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>",
    "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>",
    "<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    "<a xmlns='urn:xmpp:sm:3' h='4294967295'/>",
    "<r xmlns='urn:xmpp:sm:3'/>",
    "=",
    "biwsbj1hbGljZSxyPW5vbmNl",
    "\u{0}",
    "\u{FFFF}",
    "\u{1F600}",
    "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>",
    "<handshake/>",
    "<handshake>",
];

/// xorshift64* (Vigna).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The phases before the one that is cut, whole, then that one cut at a random point and
/// followed by mutations.
fn mutate(rng: &mut Rng, phases: &[String]) -> Vec<Vec<u8>> {
    let broken = rng.below(phases.len());
    let mut out: Vec<Vec<u8>> = phases[..broken]
        .iter()
        .map(|phase| phase.as_bytes().to_vec())
        .collect();
    let bytes = phases[broken].as_bytes();
    let cut = rng.below(bytes.len() + 1);
    let mut last = bytes[..cut].to_vec();
    for _ in 0..1 + rng.below(5) {
        match rng.below(4) {
            0 => last.extend(TOKENS[rng.below(TOKENS.len())].as_bytes()),
            1 => last.extend((0..1 + rng.below(16)).map(|_| rng.next() as u8)),
            2 if !last.is_empty() => {
                let at = rng.below(last.len());
                last[at] = rng.next() as u8;
            }
            _ => last.extend(&bytes[cut..(cut + rng.below(64)).min(bytes.len())]),
        }
    }
    out.push(last);
    out
}

/// How one hostile connection went.
struct Outcome {
    /// The server said `<success/>` or accepted the handshake.
    authenticated: bool,
    /// The server closed the connection within the wait.
    closed: bool,
    elapsed: Duration,
}

/// Send each phase in random chunks, reading what comes back in between, then read until the
/// server closes or `WAIT` passes.
async fn hostile_connection(
    addr: std::net::SocketAddr,
    phases: Vec<Vec<u8>>,
    seed: u64,
) -> Outcome {
    const WAIT: Duration = Duration::from_secs(5);
    let started = Instant::now();
    let mut rng = Rng(seed.max(1));
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut closed = false;
    'phases: for phase in phases {
        let mut at = 0;
        while at < phase.len() {
            let end = (at + 1 + rng.below(64)).min(phase.len());
            if tcp.write_all(&phase[at..end]).await.is_err() {
                break 'phases;
            }
            at = end;
        }
        // Give the server its turn (the answer to the auth, the handshake...).
        while let Ok(read) =
            tokio::time::timeout(Duration::from_millis(150), tcp.read(&mut buf)).await
        {
            match read {
                Ok(0) | Err(_) => {
                    closed = true;
                    break 'phases;
                }
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    }
    if !closed {
        closed = tokio::time::timeout(WAIT, async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .is_ok();
    }
    let seen = String::from_utf8_lossy(&seen);
    Outcome {
        authenticated: seen.contains("<success") || seen.contains("<handshake"),
        closed,
        elapsed: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_negotiations_and_handshakes_end_cleanly_and_the_server_goes_on() {
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        eprintln!("panic: {info}");
    }));
    let mut server = TestServer::start(CONFIG).await;
    server.add_user("alice@localhost", "pw").await;
    server.add_user("bob@localhost", "pw").await;
    let c2s = server.addr(0);
    let service = server.running.as_ref().unwrap().service_addrs[0];
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let (c2s_text, component_text) = (c2s_transcript(), component_transcript());
    let (mut authenticated, mut open, mut slowest) = (0, 0, Duration::ZERO);
    for _batch in 0..15 {
        let mut connections = Vec::new();
        for _ in 0..20 {
            let (addr, text) = if rng.below(3) == 0 {
                (service, &component_text)
            } else {
                (c2s, &c2s_text)
            };
            let phases = mutate(&mut rng, text);
            let seed = rng.next();
            connections.push(tokio::spawn(hostile_connection(addr, phases, seed)));
        }
        for connection in connections {
            let outcome = connection.await.unwrap();
            if outcome.authenticated {
                authenticated += 1;
                // An authenticated stream may stay open as long as its client likes.
                open += usize::from(!outcome.closed);
            } else {
                // Before authentication, handshake_timeout (2 s) ends every connection.
                assert!(
                    outcome.closed,
                    "an unauthenticated connection outlived its deadline"
                );
                slowest = slowest.max(outcome.elapsed);
            }
        }
    }
    println!(
        "figure: 300 hostile connections, {authenticated} got past authentication ({open} left open by their client), \
         the slowest unauthenticated one closed after {slowest:?}"
    );
    assert!(
        authenticated > 30,
        "the mutations reach the authenticated states"
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked");
    // The server goes on: a client logs in and gets its ping answered.
    let mut client = Client::connect(c2s).await;
    client.open("localhost").await;
    client.plain("alice", "pw").await.unwrap();
    client.open("localhost").await;
    client.bind(Some("after")).await;
    client
        .send("<iq type='get' id='ok' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(
        client.next_non_presence().await.attr("type"),
        Some("result")
    );
    server.shutdown().await;
}

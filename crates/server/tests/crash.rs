//! The `herald` binary killed with SIGKILL in the middle of delivering offline messages and in
//! the middle of a push load, then started again on the same data: every message it had
//! taken charge of is delivered, and none that a client acknowledged comes twice.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{
    client::Client,
    component::Component,
    phone::{Phone, SM, body},
};
use herald_stream::Frame;

const APP_SERVER: &str = "push.localhost";

const CONFIG: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "data"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "secret"

[modules.mod_disco]
[modules.mod_ping]
[modules.mod_offline]
max_user_offline_messages = 5000
[modules.mod_stream_management]
[modules.mod_event_pusher.push]
"#;

/// A running `herald serve` with its listeners' addresses.
struct Herald {
    child: Child,
    c2s: SocketAddr,
    service: SocketAddr,
}

impl Herald {
    fn start(dir: &Path) -> Herald {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .env_remove("RUST_LOG")
            .env_remove("HERALD_DATA")
            .args(["--config", "herald.toml", "serve"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut address = |kind: &str| -> SocketAddr {
            let line = lines.next().expect("herald printed nothing").unwrap();
            line.strip_prefix(&format!("herald: {kind} listening on "))
                .unwrap_or_else(|| panic!("unexpected: {line}"))
                .parse()
                .unwrap()
        };
        let c2s = address("c2s");
        let service = address("service");
        std::thread::spawn(move || for _ in lines {});
        Herald {
            child,
            c2s,
            service,
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing but what is already on disk survives.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prepare(dir: &Path) {
    std::fs::write(dir.join("herald.toml"), CONFIG).unwrap();
    for user in ["alice@localhost", "bob@localhost"] {
        let status = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["--config", "herald.toml", "user", "add", user, "pw"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

async fn phone(herald: &Herald, dir: &Path, user: &str, resource: &str) -> Phone {
    let cert = dir.join("data").join(herald_stream::tls::SELF_SIGNED_CERT);
    let (local, domain) = user.split_once('@').unwrap();
    let mut client = Client::connect(herald.c2s).await;
    client.open(domain).await;
    client.starttls(domain, &cert).await;
    client.scram("SCRAM-SHA-256", local, "pw").await.unwrap();
    client.open(domain).await;
    client.bind(Some(resource)).await;
    Phone::enable(client).await
}

fn chat(n: usize) -> String {
    format!("<message to='alice@localhost' type='chat'><body>m{n}</body></message>")
}

/// Message numbers from bodies `m<n>`.
fn numbers(messages: &[minidom::Element]) -> Vec<usize> {
    messages
        .iter()
        .map(|m| body(m).trim_start_matches('m').parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_kill_during_offline_delivery_delivers_the_rest_at_the_next_login_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let herald = Herald::start(dir.path());
    let mut bob = phone(&herald, dir.path(), "bob@localhost", "laptop").await;
    bob.available().await;
    for n in 0..200 {
        bob.client.send(&chat(n)).await;
    }
    bob.ping().await;

    // The phone takes 50 and acknowledges them, takes 30 more without acknowledging, and
    // the server dies under it.
    let mut alice = phone(&herald, dir.path(), "alice@localhost", "phone").await;
    alice.available().await;
    let acked = numbers(&alice.messages(50).await);
    alice.ack_all().await;
    let unacked = numbers(&alice.messages(30).await);
    herald.kill();
    assert_eq!(acked, (0..50).collect::<Vec<_>>());
    assert_eq!(unacked, (50..80).collect::<Vec<_>>());

    let herald = Herald::start(dir.path());
    let mut alice = phone(&herald, dir.path(), "alice@localhost", "phone").await;
    alice.available().await;
    let rest = numbers(&alice.messages(150).await);
    assert_eq!(
        rest,
        (50..200).collect::<Vec<_>>(),
        "what was not acknowledged comes again, in order; nothing acknowledged does"
    );
    alice.ack_all().await;
    assert!(
        alice
            .client
            .nothing_within(Duration::from_millis(300))
            .await,
        "nothing more"
    );
    herald.kill();
}

#[tokio::test]
async fn a_kill_during_a_push_load_loses_no_message_the_server_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let herald = Herald::start(dir.path());
    // Alice registered for push and is away; the app server answers every publish.
    let mut alice = phone(&herald, dir.path(), "alice@localhost", "phone").await;
    let enable = format!(
        "<iq type='set' id='push'><enable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}' node='n'/></iq>"
    );
    assert_eq!(alice.iq(&enable).await.attr("type"), Some("result"));
    alice.client.send("</stream:stream>").await;
    alice.client.closed().await;
    let mut app = Component::connect(herald.service, APP_SERVER, "secret").await;
    let answering = tokio::spawn(async move {
        let mut publishes = 0usize;
        while let Some(Frame::Element(iq)) = app.frame(Duration::from_secs(30)).await {
            if iq.name() == "iq" && iq.attr("type") == Some("set") {
                publishes += 1;
                let answer = format!(
                    "<iq type='result' id='{}' from='{APP_SERVER}' to='{}'/>",
                    iq.attr("id").unwrap(),
                    iq.attr("from").unwrap()
                );
                if app.try_send(&answer).await.is_err() {
                    break;
                }
            }
        }
        publishes
    });

    // Bob floods her; in the middle he asks how many the server handled, and the server
    // is killed the moment it answers, while more are arriving.
    let mut bob = phone(&herald, dir.path(), "bob@localhost", "laptop").await;
    bob.available().await;
    for n in 0..300 {
        bob.client.send(&chat(n)).await;
    }
    bob.client.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    for n in 300..600 {
        bob.client.send(&chat(n)).await;
    }
    let h = loop {
        let element = bob.client.next().await;
        if element.is("a", SM) {
            break element.attr("h").unwrap().parse::<usize>().unwrap();
        }
        if element.is("r", SM) {
            let handled = bob.handled;
            bob.client
                .send(&format!("<a xmlns='urn:xmpp:sm:3' h='{handled}'/>"))
                .await;
        }
    };
    herald.kill();
    // h counts bob's initial presence, then his messages in order.
    let acknowledged = h - 1;
    assert!(
        acknowledged >= 300,
        "the ack request followed 300 messages: {h}"
    );
    let publishes = answering.await.unwrap();
    println!(
        "figure: {publishes} pushes published before the kill, {acknowledged} messages acknowledged to the sender"
    );

    let herald = Herald::start(dir.path());
    let mut alice = phone(&herald, dir.path(), "alice@localhost", "phone").await;
    alice.available().await;
    let mut got = Vec::new();
    while let Ok(messages) =
        tokio::time::timeout(Duration::from_millis(1500), alice.messages(1)).await
    {
        got.extend(numbers(&messages));
    }
    assert!(
        got.len() >= acknowledged,
        "every acknowledged message was stored: {} of {acknowledged}",
        got.len()
    );
    assert_eq!(
        got,
        (0..got.len()).collect::<Vec<_>>(),
        "in order, none twice"
    );
    herald.kill();
}

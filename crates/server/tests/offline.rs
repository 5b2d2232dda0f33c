//! Black-box tests of offline messages (XEP-0160, XEP-0203 delay stamps): stored for an
//! account with no available resource, delivered in order at its next login, kept across a
//! restart, refused when the account's store is full.

mod common;

use std::time::Duration;

use common::{TestServer, client::Client};
use herald_server::app;
use minidom::Element;

const DELAY: &str = "urn:xmpp:delay";

const CONFIG: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[modules.mod_roster]
[modules.mod_offline]
max_user_offline_messages = 3
"#;

/// Everything that arrives until nothing more comes for `quiet` (a read cancelled by the
/// timeout loses nothing: the client only consumes bytes once a read completes).
async fn received_until_quiet(client: &mut Client, quiet: Duration) -> Vec<Element> {
    let mut out = Vec::new();
    while let Ok(frame) = tokio::time::timeout(quiet, client.next_frame()).await {
        match frame {
            Some(herald_stream::Frame::Element(element)) => out.push(element),
            _ => break,
        }
    }
    out
}

async fn server() -> TestServer {
    let server = TestServer::start(CONFIG).await;
    server.add_user("alice@localhost", "alice-pass").await;
    server.add_user("bob@localhost", "bob-pass").await;
    server
}

async fn alice(server: &TestServer) -> Client {
    Client::online(server, "alice@localhost", "alice-pass", "laptop", 0).await
}

fn body(element: &Element) -> Option<String> {
    element
        .get_child("body", "jabber:client")
        .map(|body| body.text())
}

fn error_condition(stanza: &Element) -> Option<String> {
    let error = stanza.get_child("error", "jabber:client")?;
    error
        .children()
        .find(|c| c.ns() == common::client::STANZAS)
        .map(|c| c.name().to_owned())
}

/// Bob logs in and sends initial presence with `priority`; returns him and the messages
/// that arrived.
async fn bob_logs_in(server: &TestServer, priority: i8) -> (Client, Vec<Element>) {
    let mut bob = Client::login(server, "bob@localhost", "bob-pass", "phone").await;
    bob.send(&format!(
        "<presence><priority>{priority}</priority></presence>"
    ))
    .await;
    let received = received_until_quiet(&mut bob, Duration::from_millis(400)).await;
    let messages = received
        .into_iter()
        .filter(|e| e.name() == "message")
        .collect();
    (bob, messages)
}

#[tokio::test]
async fn messages_sent_to_an_offline_user_arrive_at_login_in_order_with_delay_stamps() {
    let mut server = server().await;
    let mut alice = alice(&server).await;
    for (n, kind) in ["chat", "normal", "chat"].iter().enumerate() {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='{kind}' id='m{n}'><body>message {n}</body></message>"
            ))
            .await;
    }
    // Stored, not bounced.
    assert!(alice.nothing_within(Duration::from_millis(300)).await);

    let (_bob, messages) = bob_logs_in(&server, 0).await;
    let bodies: Vec<_> = messages.iter().filter_map(body).collect();
    assert_eq!(bodies, ["message 0", "message 1", "message 2"]);
    for message in &messages {
        assert_eq!(message.attr("from"), Some("alice@localhost/laptop"));
        let delay = message.get_child("delay", DELAY).expect("a delay stamp");
        assert_eq!(delay.attr("from"), Some("localhost"));
        // XEP-0082 DateTime in UTC: "Z" or "+00:00".
        let stamp = delay.attr("stamp").unwrap();
        assert!(
            stamp.as_bytes()[10] == b'T' && (stamp.ends_with('Z') || stamp.ends_with("+00:00")),
            "{stamp}"
        );
    }
    // Delivered once: a second login gets nothing.
    let (_again, messages) = bob_logs_in(&server, 0).await;
    assert!(messages.is_empty(), "{messages:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_offline_limit_answers_resource_constraint() {
    let mut server = server().await;
    let mut alice = alice(&server).await;
    for n in 0..3 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat'><body>{n}</body></message>"
            ))
            .await;
    }
    alice
        .send(
            "<message to='bob@localhost' type='chat' id='over'><body>one too many</body></message>",
        )
        .await;
    let bounce = alice.next().await;
    assert_eq!(bounce.attr("id"), Some("over"));
    assert_eq!(bounce.attr("type"), Some("error"));
    let error = bounce.get_child("error", "jabber:client").unwrap();
    assert_eq!(error.attr("type"), Some("wait"));
    assert_eq!(
        error_condition(&bounce).as_deref(),
        Some("resource-constraint")
    );
    let (_bob, messages) = bob_logs_in(&server, 0).await;
    assert_eq!(messages.len(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn headline_messages_are_not_stored() {
    let mut server = server().await;
    let mut alice = alice(&server).await;
    alice
        .send("<message to='bob@localhost' type='headline'><body>news</body></message>")
        .await;
    // Dropped silently (RFC 6121 section 8.5.2.2.1)...
    assert!(alice.nothing_within(Duration::from_millis(300)).await);
    // ...groupchat and content-free chat are bounced, errors dropped.
    alice
        .send("<message to='bob@localhost' type='groupchat' id='g'><body>room</body></message>")
        .await;
    assert_eq!(
        error_condition(&alice.next().await).as_deref(),
        Some("service-unavailable")
    );
    alice
        .send(
            "<message to='bob@localhost' type='chat' id='c'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        )
        .await;
    assert_eq!(
        error_condition(&alice.next().await).as_deref(),
        Some("service-unavailable")
    );
    alice
        .send("<message to='bob@localhost' type='error'><body>x</body></message>")
        .await;
    let (_bob, messages) = bob_logs_in(&server, 0).await;
    assert!(messages.is_empty(), "{messages:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_to_a_user_that_does_not_exist_is_bounced_not_stored() {
    let mut server = server().await;
    let mut alice = alice(&server).await;
    alice
        .send("<message to='ghost@localhost' type='chat' id='g1'><body>anyone?</body></message>")
        .await;
    let bounce = alice.next().await;
    assert_eq!(bounce.attr("id"), Some("g1"));
    assert_eq!(bounce.attr("from"), Some("ghost@localhost"));
    assert_eq!(
        error_condition(&bounce).as_deref(),
        Some("service-unavailable")
    );
    let ghost = jid::BareJid::new("ghost@localhost").unwrap();
    let storage = &server.running.as_ref().unwrap().server.storage;
    assert_eq!(storage.offline().count(&ghost).await.unwrap(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_negative_priority_gets_offline_messages_only_once_it_is_non_negative() {
    let mut server = server().await;
    let mut alice = alice(&server).await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>later</body></message>")
        .await;
    let (mut bob, messages) = bob_logs_in(&server, -1).await;
    assert!(messages.is_empty(), "{messages:?}");
    bob.send("<presence><priority>1</priority></presence>")
        .await;
    let received = received_until_quiet(&mut bob, Duration::from_millis(400)).await;
    let bodies: Vec<_> = received.iter().filter_map(body).collect();
    assert_eq!(bodies, ["later"]);
    server.shutdown().await;
}

#[tokio::test]
async fn offline_messages_survive_a_server_restart() {
    let mut server = server().await;
    let mut alice = alice(&server).await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>before the restart</body></message>")
        .await;
    assert!(alice.nothing_within(Duration::from_millis(200)).await);
    drop(alice);
    server.shutdown().await;

    // The same configuration, hence the same data directory and database.
    server.running = Some(app::start(&server.config).await.unwrap());
    let (_bob, messages) = bob_logs_in(&server, 5).await;
    let bodies: Vec<_> = messages.iter().filter_map(body).collect();
    assert_eq!(bodies, ["before the restart"]);
    assert!(messages[0].get_child("delay", DELAY).is_some());
    server.shutdown().await;
}

#[tokio::test]
async fn without_mod_offline_messages_to_offline_users_are_bounced() {
    let mut server = TestServer::start(
        &CONFIG.replace("[modules.mod_offline]\nmax_user_offline_messages = 3\n", ""),
    )
    .await;
    server.add_user("alice@localhost", "alice-pass").await;
    server.add_user("bob@localhost", "bob-pass").await;
    let mut alice = alice(&server).await;
    alice
        .send("<message to='bob@localhost' type='chat' id='b'><body>x</body></message>")
        .await;
    assert_eq!(
        error_condition(&alice.next().await).as_deref(),
        Some("service-unavailable")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_burst_from_a_phone_with_stream_management_is_acknowledged_and_arrives_in_order() {
    // Her `<r/>` is answered with every message before it counted (each stored before her
    // next stanza is read), and bob gets them in order.
    let config = CONFIG.replace(
        "max_user_offline_messages = 3",
        "max_user_offline_messages = 100\n[modules.mod_stream_management]",
    );
    let server = TestServer::start(&config).await;
    server.add_user("alice@localhost", "alice-pass").await;
    server.add_user("bob@localhost", "bob-pass").await;
    let mut alice = alice(&server).await;
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    loop {
        let element = alice.next().await;
        if element.name() == "enabled" {
            break;
        }
    }
    let mut burst: String = (0..60)
        .map(|n| format!("<message to='bob@localhost' type='chat'><body>{n}</body></message>"))
        .collect();
    burst.push_str("<r xmlns='urn:xmpp:sm:3'/>");
    alice.send(&burst).await;
    let h = loop {
        let element = alice.next().await;
        if element.name() == "a" {
            break element.attr("h").unwrap().to_owned();
        }
    };
    assert_eq!(h, "60");
    let (_bob, messages) = bob_logs_in(&server, 0).await;
    let bodies: Vec<String> = messages.iter().filter_map(body).collect();
    let expected: Vec<String> = (0..60).map(|n| n.to_string()).collect();
    assert_eq!(bodies, expected);
}

#[tokio::test]
async fn more_stored_messages_than_a_page_all_reach_a_client_without_stream_management() {
    // Stored messages are read 64 at a time; with stream management the client's acks wake the
    // session for the next page, without it nothing did, and the rest waited for the next
    // stanza or ping.
    let server = TestServer::start(&CONFIG.replace(
        "max_user_offline_messages = 3",
        "max_user_offline_messages = 1000",
    ))
    .await;
    server.add_user("alice@localhost", "alice-pass").await;
    server.add_user("bob@localhost", "bob-pass").await;
    let mut bob = Client::online(&server, "bob@localhost", "bob-pass", "laptop", 0).await;
    for n in 0..150 {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat' id='m{n}'><body>{n}</body></message>"
        ))
        .await;
    }
    let storage = &server.running.as_ref().unwrap().server.storage;
    let alice_jid = jid::BareJid::new("alice@localhost").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while storage.offline().count(&alice_jid).await.unwrap() < 150 {
        assert!(tokio::time::Instant::now() < deadline, "not all stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut alice = alice(&server).await;
    let got = received_until_quiet(&mut alice, Duration::from_secs(1)).await;
    let bodies: Vec<String> = got.iter().filter_map(body).collect();
    let expected: Vec<String> = (0..150).map(|n| n.to_string()).collect();
    assert_eq!(bodies, expected);
}

//! Black-box tests of stream management (XEP-0198) with resumption.

mod common;

use std::time::Duration;

use common::{
    STARTTLS, TestServer,
    client::{Client, Closed},
};
use minidom::Element;

const SM: &str = "urn:xmpp:sm:3";

fn config(sm: &str) -> String {
    format!(
        r#"
[general]
hosts = ["localhost"]
data_dir = "{{DATA}}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[modules.mod_disco]
[modules.mod_ping]
[modules.mod_stream_management]
{sm}
"#
    )
}

async fn server(sm: &str) -> TestServer {
    let server = TestServer::start(&config(sm)).await;
    server.add_user("alice@localhost", "pw").await;
    server.add_user("bob@localhost", "pw").await;
    server
}

/// Log in, enable stream management (with resumption) and send initial presence; returns
/// the client and the resumption id.
async fn sm_online(server: &TestServer, user: &str, resource: &str) -> (Client, String) {
    let mut client = Client::login(server, user, "pw", resource).await;
    assert!(client.features.as_ref().unwrap().has_child("sm", SM));
    client
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let enabled = client.next().await;
    assert_eq!(enabled.name(), "enabled", "{enabled:?}");
    assert_eq!(enabled.attr("resume"), Some("true"));
    let id = enabled.attr("id").unwrap().to_owned();
    client.send("<presence/>").await;
    loop {
        let e = client.next().await;
        if e.name() == "presence" && e.attr("from") == client.jid.as_deref() {
            break;
        }
    }
    (client, id)
}

/// The next message, answering nothing and skipping ack requests and presence.
async fn next_message(client: &mut Client) -> Element {
    loop {
        let e = client.next().await;
        if e.name() == "message" {
            return e;
        }
    }
}

fn body(message: &Element) -> String {
    message.get_child("body", "jabber:client").unwrap().text()
}

async fn send_chat(from: &mut Client, to: &str, text: &str) {
    from.send(&format!(
        "<message to='{to}' type='chat'><body>{text}</body></message>"
    ))
    .await;
}

/// A new connection authenticated as `user` that asks to resume `id` with `h`.
async fn resume(server: &TestServer, user: &str, id: &str, h: u32) -> (Client, Element) {
    let mut client = Client::connect(server.addr(STARTTLS)).await;
    client.open("localhost").await;
    client.starttls("localhost", &server.cert()).await;
    client.scram("SCRAM-SHA-256", user, "pw").await.unwrap();
    client.open("localhost").await;
    client
        .send(&format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='{h}'/>"
        ))
        .await;
    let answer = client.next().await;
    (client, answer)
}

#[tokio::test]
async fn resumption_delivers_unacknowledged_messages_exactly_once_on_a_new_connection() {
    let mut server = server("").await;
    let (mut alice, id) = sm_online(&server, "alice@localhost", "phone").await;
    let mut bob = Client::online(&server, "bob@localhost", "pw", "pc", 0).await;
    for n in 1..=3 {
        send_chat(&mut bob, "alice@localhost", &format!("m{n}")).await;
        assert_eq!(body(&next_message(&mut alice).await), format!("m{n}"));
    }
    // The phone acknowledges the first message only, then its connection dies.
    alice.send("<a xmlns='urn:xmpp:sm:3' h='1'/>").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(alice);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // While it waits the session still counts as available: these are buffered, not bounced.
    send_chat(&mut bob, "alice@localhost", "m4").await;
    send_chat(&mut bob, "alice@localhost", "m5").await;
    assert!(
        bob.nothing_within(Duration::from_millis(200)).await,
        "no bounce while waiting"
    );
    // The client resumes saying it handled two stanzas from the server: its initial
    // presence echo and m1.
    let (mut alice, resumed) = resume(&server, "alice", &id, 2).await;
    assert_eq!(resumed.name(), "resumed", "{resumed:?}");
    assert_eq!(resumed.attr("previd"), Some(id.as_str()));
    let mut bodies = Vec::new();
    for _ in 0..4 {
        bodies.push(body(&next_message(&mut alice).await));
    }
    assert_eq!(bodies, ["m2", "m3", "m4", "m5"]);
    alice.send("<a xmlns='urn:xmpp:sm:3' h='6'/>").await;
    let rest = alice.drain(Duration::from_millis(300)).await;
    assert!(
        rest.iter().all(|e| e.name() != "message"),
        "nothing twice: {rest:?}"
    );
    // The resumed session works both ways.
    send_chat(&mut alice, "bob@localhost", "back").await;
    assert_eq!(body(&next_message(&mut bob).await), "back");
    server.shutdown().await;
}

#[tokio::test]
async fn ack_requests_are_answered_with_the_count_of_handled_stanzas() {
    let mut server = server("").await;
    let (mut alice, _id) = sm_online(&server, "alice@localhost", "phone").await;
    // Handled so far: the initial presence.
    alice.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let a = alice
        .drain(Duration::from_millis(200))
        .await
        .into_iter()
        .find(|e| e.name() == "a")
        .unwrap();
    assert_eq!(a.attr("h"), Some("1"));
    alice
        .send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/>")
        .await;
    let got = alice.drain(Duration::from_millis(200)).await;
    assert_eq!(
        got.iter().find(|e| e.name() == "a").unwrap().attr("h"),
        Some("2")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_requests_acks_per_ack_freq() {
    let mut server = server("ack_freq = 1").await;
    let (mut alice, _id) = sm_online(&server, "alice@localhost", "phone").await;
    let mut bob = Client::online(&server, "bob@localhost", "pw", "pc", 0).await;
    send_chat(&mut bob, "alice@localhost", "x").await;
    let got = alice.drain(Duration::from_millis(300)).await;
    assert!(
        got.iter().any(|e| e.name() == "r" && e.ns() == SM),
        "{got:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_resumption_id_fails_with_item_not_found_and_binding_still_works() {
    let mut server = server("").await;
    let (mut client, failed) = resume(&server, "alice", "no-such-id", 0).await;
    assert_eq!(failed.name(), "failed");
    assert!(failed.has_child("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    assert_eq!(client.bind(Some("fresh")).await, "alice@localhost/fresh");
    server.shutdown().await;
}

#[tokio::test]
async fn another_users_session_cannot_be_resumed() {
    let mut server = server("").await;
    let (alice, id) = sm_online(&server, "alice@localhost", "phone").await;
    drop(alice);
    let (_bob, failed) = resume(&server, "bob", &id, 0).await;
    assert_eq!(failed.name(), "failed");
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_session_fails_cleanly_and_its_messages_are_routed_again() {
    let mut server = server("resume_timeout = 1\nstale_h.enabled = true").await;
    let (mut phone, id) = sm_online(&server, "alice@localhost", "phone").await;
    let mut laptop = Client::online(&server, "alice@localhost", "pw", "laptop", -1).await;
    let mut bob = Client::online(&server, "bob@localhost", "pw", "pc", 0).await;
    send_chat(&mut bob, "alice@localhost", "unacked").await;
    assert_eq!(body(&next_message(&mut phone).await), "unacked");
    drop(phone);
    // After the timeout the phone's unacknowledged message is routed again, to alice's bare
    // JID: the only resource left has a negative priority and no offline storage is
    // configured here, so it comes back to bob as an error.
    let bounce = next_message(&mut bob).await;
    assert_eq!(bounce.attr("type"), Some("error"), "{bounce:?}");
    assert_eq!(body(&bounce), "unacked");
    let _ = laptop.drain(Duration::from_millis(50)).await;
    let (_late, failed) = resume(&server, "alice", &id, 0).await;
    assert_eq!(failed.name(), "failed");
    assert!(failed.has_child("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    // stale_h: the last handled count is remembered (the initial presence).
    assert_eq!(failed.attr("h"), Some("1"));
    server.shutdown().await;
}

#[tokio::test]
async fn unacknowledged_messages_of_a_closed_session_go_to_the_other_resource() {
    let mut server = server("").await;
    let (mut phone, _id) = sm_online(&server, "alice@localhost", "phone").await;
    let mut laptop = Client::online(&server, "alice@localhost", "pw", "laptop", 0).await;
    let mut bob = Client::online(&server, "bob@localhost", "pw", "pc", 0).await;
    send_chat(&mut bob, "alice@localhost/phone", "for the phone").await;
    assert_eq!(body(&next_message(&mut phone).await), "for the phone");
    // The phone closes its stream without acknowledging: the session ends at once.
    phone.send("</stream:stream>").await;
    assert_eq!(phone.closed().await, Closed::StreamClose);
    assert_eq!(body(&next_message(&mut laptop).await), "for the phone");
    server.shutdown().await;
}

#[tokio::test]
async fn resuming_while_the_old_connection_is_open_closes_the_old_one() {
    let mut server = server("").await;
    let (mut old, id) = sm_online(&server, "alice@localhost", "phone").await;
    let mut bob = Client::online(&server, "bob@localhost", "pw", "pc", 0).await;
    let (mut new, resumed) = resume(&server, "alice", &id, 1).await;
    assert_eq!(resumed.name(), "resumed");
    assert!(matches!(
        old.closed().await,
        Closed::Eof | Closed::StreamClose | Closed::StreamError(_)
    ));
    send_chat(&mut bob, "alice@localhost/phone", "to the new connection").await;
    assert_eq!(body(&next_message(&mut new).await), "to the new connection");
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_buffer_pauses_delivery_until_the_client_acknowledges() {
    let mut server = server("buffer_max = 3\nack_freq = \"never\"").await;
    let (mut alice, _id) = sm_online(&server, "alice@localhost", "phone").await;
    let mut bob = Client::online(&server, "bob@localhost", "pw", "pc", 0).await;
    // The presence echo is unacknowledged already: two messages fill the buffer.
    for n in 0..4 {
        send_chat(&mut bob, "alice@localhost", &format!("m{n}")).await;
    }
    let first = alice.drain(Duration::from_millis(300)).await;
    let bodies: Vec<String> = first
        .iter()
        .filter(|e| e.name() == "message")
        .map(body)
        .collect();
    assert_eq!(bodies, ["m0", "m1"], "{first:?}");
    assert!(
        first.iter().any(|e| e.name() == "r" && e.ns() == SM),
        "a full buffer asks for an ack even with ack_freq = never: {first:?}"
    );
    // The acknowledgement lets the rest through; nothing was bounced or closed.
    alice.send("<a xmlns='urn:xmpp:sm:3' h='3'/>").await;
    let rest = alice.drain(Duration::from_millis(300)).await;
    let bodies: Vec<String> = rest
        .iter()
        .filter(|e| e.name() == "message")
        .map(body)
        .collect();
    assert_eq!(bodies, ["m2", "m3"], "{rest:?}");
    assert!(bob.nothing_within(Duration::from_millis(100)).await);
    server.shutdown().await;
}

#[tokio::test]
async fn acknowledging_more_than_was_sent_is_undefined_condition() {
    let mut server = server("").await;
    let (mut alice, _id) = sm_online(&server, "alice@localhost", "phone").await;
    alice.send("<a xmlns='urn:xmpp:sm:3' h='10'/>").await;
    assert_eq!(
        alice.closed().await,
        Closed::StreamError("undefined-condition".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn enabling_twice_or_before_binding_fails() {
    let mut server = server("").await;
    let (mut alice, _id) = sm_online(&server, "alice@localhost", "phone").await;
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let failed = alice
        .drain(Duration::from_millis(200))
        .await
        .into_iter()
        .find(|e| e.name() == "failed")
        .unwrap();
    assert!(failed.has_child("unexpected-request", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    let mut early = Client::connect(server.addr(STARTTLS)).await;
    early.open("localhost").await;
    early.starttls("localhost", &server.cert()).await;
    early.scram("SCRAM-SHA-256", "bob", "pw").await.unwrap();
    early.open("localhost").await;
    early.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    assert_eq!(early.next().await.name(), "failed");
    server.shutdown().await;
}

#[tokio::test]
async fn without_the_module_stream_management_is_not_offered() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "pw").await;
    let mut client = Client::login(&server, "alice@localhost", "pw", "r").await;
    assert!(!client.features.as_ref().unwrap().has_child("sm", SM));
    client.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    assert_eq!(client.next().await.name(), "failed");
    server.shutdown().await;
}

//! Black-box tests of the limits that keep hostile or broken clients from costing unbounded
//! time or memory: the negotiation deadline, connections per IP address, sessions per
//! account, login throttling, and what one account may make the server keep.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestServer,
    client::{Client, Closed},
};

fn config(c2s: &str, extra: &str) -> String {
    format!(
        r#"
[general]
hosts = ["localhost"]
data_dir = "{{DATA}}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"
{c2s}

[modules.mod_disco]
[modules.mod_roster]
{extra}
"#
    )
}

async fn start(c2s: &str, extra: &str) -> TestServer {
    let server = TestServer::start(&config(c2s, extra)).await;
    server.add_user("alice@localhost", "pw").await;
    server.add_user("bob@localhost", "pw").await;
    server
}

#[tokio::test]
async fn a_client_that_keeps_the_negotiation_busy_is_cut_at_the_handshake_deadline() {
    let mut server = start("handshake_timeout = 1", "").await;
    let mut client = Client::connect(server.addr(0)).await;
    client.open("localhost").await;
    // Whitespace keeps each wait short (state_timeout is 5 s) but never gets anywhere.
    let started = Instant::now();
    loop {
        if client.try_send(b" ").await.is_err() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        if !client.nothing_within(Duration::from_millis(200)).await {
            break;
        }
    }
    assert!(
        matches!(
            client.closed().await,
            Closed::Eof | Closed::StreamClose | Closed::StreamError(_)
        ),
        "the connection is closed"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "cut at the deadline, not by state_timeout: {elapsed:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_per_ip_limit_are_refused_with_resource_constraint() {
    let mut server = start("max_connections_per_ip = 2", "").await;
    let first = Client::login(&server, "alice@localhost", "pw", "one").await;
    let _second = Client::login(&server, "alice@localhost", "pw", "two").await;
    let mut third = Client::connect(server.addr(0)).await;
    third
        .send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
        .await;
    assert_eq!(
        third.closed().await,
        Closed::StreamError("resource-constraint".into())
    );
    // A slot freed is a slot again.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _fourth = Client::login(&server, "alice@localhost", "pw", "three").await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_account_at_its_session_limit_cannot_bind_another_resource() {
    let text = config("", "").replace("data_dir", "max_user_sessions = 2\ndata_dir");
    let mut server = TestServer::start(&text).await;
    server.add_user("alice@localhost", "pw").await;
    let _one = Client::login(&server, "alice@localhost", "pw", "one").await;
    let _two = Client::login(&server, "alice@localhost", "pw", "two").await;
    let mut three = Client::connect(server.addr(0)).await;
    three.open("localhost").await;
    three.starttls("localhost", &server.cert()).await;
    three.scram("SCRAM-SHA-256", "alice", "pw").await.unwrap();
    three.open("localhost").await;
    three
        .send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>three</resource></bind></iq>")
        .await;
    let reply = three.next().await;
    assert_eq!(reply.attr("type"), Some("error"), "{reply:?}");
    let error = reply.get_child("error", "jabber:client").unwrap();
    assert_eq!(error.attr("type"), Some("wait"));
    assert!(error.has_child("resource-constraint", common::client::STANZAS));
    // Binding a resource the account already has replaces it: still allowed.
    let _again = Client::login(&server, "alice@localhost", "pw", "two").await;
    server.shutdown().await;
}

#[tokio::test]
async fn repeated_failed_logins_from_one_address_are_refused_until_they_expire() {
    let mut server = start(
        "",
        "[modules.mod_fail2ban]\nc2s_max_auth_failures = 3\nc2s_auth_ban_lifetime = 2\n",
    )
    .await;
    let attempt = |password: &'static str| {
        let addr = server.addr(0);
        let cert = server.cert();
        async move {
            let mut client = Client::connect(addr).await;
            client.open("localhost").await;
            client.starttls("localhost", &cert).await;
            client.scram("SCRAM-SHA-256", "alice", password).await
        }
    };
    for _ in 0..3 {
        assert_eq!(attempt("wrong").await, Err("not-authorized".into()));
    }
    // Even the right password is refused now, without being checked.
    assert_eq!(attempt("pw").await, Err("temporary-auth-failure".into()));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(attempt("pw").await, Ok(()));
    server.shutdown().await;
}

async fn roster_set(client: &mut Client, contact: &str) -> minidom::Element {
    client
        .send(&format!(
            "<iq type='set' id='set-{contact}'><query xmlns='jabber:iq:roster'><item jid='{contact}'/></query></iq>"
        ))
        .await;
    loop {
        let element = client.next().await;
        if element.name() == "iq" && element.attr("id") == Some(&format!("set-{contact}")) {
            return element;
        }
    }
}

#[tokio::test]
async fn a_full_roster_refuses_new_items_and_drops_new_subscription_requests() {
    let text = config("", "").replace(
        "[modules.mod_roster]",
        "[modules.mod_roster]\nmax_roster_size = 2",
    );
    let mut server = TestServer::start(&text).await;
    for user in ["alice", "bob", "carol"] {
        server.add_user(&format!("{user}@localhost"), "pw").await;
    }
    let mut alice = Client::login(&server, "alice@localhost", "pw", "phone").await;
    for contact in ["one@example.org", "two@example.org"] {
        assert_eq!(
            roster_set(&mut alice, contact).await.attr("type"),
            Some("result")
        );
    }
    let refused = roster_set(&mut alice, "three@example.org").await;
    assert_eq!(refused.attr("type"), Some("error"), "{refused:?}");
    let error = refused.get_child("error", "jabber:client").unwrap();
    assert!(error.has_child("not-allowed", common::client::STANZAS));
    // An item already there can still change.
    assert_eq!(
        roster_set(&mut alice, "two@example.org").await.attr("type"),
        Some("result")
    );
    alice.send("</stream:stream>").await;
    alice.closed().await;
    // A request from a contact not in the full roster is not kept.
    let mut bob = Client::online(&server, "bob@localhost", "pw", "pc", 0).await;
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice = Client::online(&server, "alice@localhost", "pw", "phone", 0).await;
    let arrived = alice.drain(Duration::from_millis(300)).await;
    assert!(
        arrived.iter().all(|e| e.attr("type") != Some("subscribe")),
        "{arrived:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_long_subscription_request_text_is_cut_when_kept() {
    let mut server = start("", "").await;
    let mut bob = Client::online(&server, "bob@localhost", "pw", "pc", 0).await;
    let long = "y".repeat(5000);
    bob.send(&format!(
        "<presence to='alice@localhost' type='subscribe'><status>{long}</status></presence>"
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice = Client::online(&server, "alice@localhost", "pw", "phone", 0).await;
    let request = loop {
        let element = alice.next().await;
        if element.attr("type") == Some("subscribe") {
            break element;
        }
    };
    let status = request.get_child("status", "jabber:client").unwrap().text();
    assert_eq!(status.chars().count(), 1024);
    server.shutdown().await;
}

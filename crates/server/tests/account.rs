//! Black-box tests of account removal (XEP-0077 cancellation, `herald user remove`) with the
//! data that goes with an account, and of in-band registration and password changes
//! (`[modules.mod_register]`).

mod common;

use std::time::Duration;

use common::{
    TestServer,
    client::{Client, Closed},
};
use herald_server::app;
use minidom::Element;

const ROSTER: &str = "jabber:iq:roster";
const REGISTER: &str = "jabber:iq:register";

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

async fn server(config: &str) -> TestServer {
    let server = TestServer::start(config).await;
    server.add_user("alice@localhost", "alice-pass").await;
    server.add_user("bob@localhost", "bob-pass").await;
    server
}

async fn until(client: &mut Client, what: &str, matches: impl Fn(&Element) -> bool) -> Element {
    for _ in 0..100 {
        let element = client.next().await;
        if matches(&element) {
            return element;
        }
    }
    panic!("never got {what}");
}

fn presence_of<'a>(kind: &'a str, from: &'a str) -> impl Fn(&Element) -> bool + 'a {
    move |e: &Element| {
        e.name() == "presence"
            && e.attr("type").unwrap_or("available") == kind
            && e.attr("from") == Some(from)
    }
}

fn error_condition(stanza: &Element) -> Option<String> {
    let error = stanza.get_child("error", "jabber:client")?;
    error
        .children()
        .find(|c| c.ns() == common::client::STANZAS)
        .map(|c| c.name().to_owned())
}

/// The roster as (jid, subscription) pairs; fetching it makes the resource interested.
async fn roster(client: &mut Client) -> Vec<(String, String)> {
    client
        .send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let reply = until(client, "the roster", |e| e.attr("id") == Some("roster")).await;
    reply
        .get_child("query", ROSTER)
        .unwrap()
        .children()
        .map(|item| {
            (
                item.attr("jid").unwrap_or_default().to_owned(),
                item.attr("subscription").unwrap_or("none").to_owned(),
            )
        })
        .collect()
}

/// Alice and bob subscribe to each other, then bob goes offline and alice leaves him three
/// messages: bob's account now has a roster entry and offline messages.
async fn bob_with_data(server: &TestServer) -> Client {
    let mut alice = Client::online(server, "alice@localhost", "alice-pass", "laptop", 0).await;
    roster(&mut alice).await;
    let mut bob = Client::online(server, "bob@localhost", "bob-pass", "phone", 0).await;
    roster(&mut bob).await;
    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    until(
        &mut bob,
        "the request",
        presence_of("subscribe", "alice@localhost"),
    )
    .await;
    bob.send("<presence to='alice@localhost' type='subscribed'/><presence to='alice@localhost' type='subscribe'/>")
        .await;
    until(
        &mut alice,
        "the request",
        presence_of("subscribe", "bob@localhost"),
    )
    .await;
    alice
        .send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    until(
        &mut bob,
        "the approval",
        presence_of("subscribed", "alice@localhost"),
    )
    .await;
    assert_eq!(
        roster(&mut bob).await,
        [("alice@localhost".into(), "both".into())]
    );
    drop(bob);
    until(
        &mut alice,
        "bob leaving",
        presence_of("unavailable", "bob@localhost/phone"),
    )
    .await;
    for n in 0..3 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat'><body>{n}</body></message>"
            ))
            .await;
    }
    assert!(alice.nothing_within(Duration::from_millis(200)).await);
    let bob = jid::BareJid::new("bob@localhost").unwrap();
    let storage = &server.running.as_ref().unwrap().server.storage;
    assert_eq!(storage.offline().count(&bob).await.unwrap(), 3);
    alice
}

/// Bob's account, created again, starts empty: no roster, no offline messages.
async fn recreated_bob_starts_empty(server: &TestServer) {
    server.add_user("bob@localhost", "new-pass").await;
    let mut bob = Client::login(server, "bob@localhost", "new-pass", "phone").await;
    assert!(roster(&mut bob).await.is_empty());
    bob.send("<presence/>").await;
    let received = received_until_quiet(&mut bob, Duration::from_millis(400)).await;
    assert!(
        received.iter().all(|e| e.name() != "message"),
        "{received:?}"
    );
}

#[tokio::test]
async fn in_band_cancellation_removes_the_account_roster_and_offline_messages() {
    let mut server = server(CONFIG).await;
    let mut alice = bob_with_data(&server).await;

    // Bob logs in without presence (so nothing is delivered) and cancels his account.
    let mut bob = Client::login(&server, "bob@localhost", "bob-pass", "phone").await;
    let mut other = Client::login(&server, "bob@localhost", "bob-pass", "tablet").await;
    bob.send("<iq type='set' id='unreg1'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        .await;
    let result = until(&mut bob, "the result", |e| e.attr("id") == Some("unreg1")).await;
    assert_eq!(result.attr("type"), Some("result"));
    // XEP-0077 section 3.2: every session of the account ends with not-authorized.
    assert_eq!(
        bob.closed().await,
        Closed::StreamError("not-authorized".into())
    );
    assert_eq!(
        other.closed().await,
        Closed::StreamError("not-authorized".into())
    );
    // The contact's subscriptions are cancelled both ways.
    until(
        &mut alice,
        "bob's unsubscribe",
        presence_of("unsubscribe", "bob@localhost"),
    )
    .await;
    until(
        &mut alice,
        "bob's unsubscribed",
        presence_of("unsubscribed", "bob@localhost"),
    )
    .await;
    assert_eq!(
        roster(&mut alice).await,
        [("bob@localhost".into(), "none".into())]
    );
    // The account is gone: logging in fails, messages bounce.
    let mut again = Client::connect(server.addr(common::STARTTLS)).await;
    again.open("localhost").await;
    again.starttls("localhost", &server.cert()).await;
    assert_eq!(
        again.scram("SCRAM-SHA-256", "bob", "bob-pass").await,
        Err("not-authorized".into())
    );
    alice
        .send("<message to='bob@localhost' type='chat' id='lost'><body>x</body></message>")
        .await;
    let bounce = until(&mut alice, "the bounce", |e| e.attr("id") == Some("lost")).await;
    assert_eq!(
        error_condition(&bounce).as_deref(),
        Some("service-unavailable")
    );
    recreated_bob_starts_empty(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn herald_user_remove_deletes_the_account_with_its_roster_and_offline_messages() {
    let mut server = server(CONFIG).await;
    let mut alice = bob_with_data(&server).await;
    app::user_remove(&server.config, "bob@localhost")
        .await
        .unwrap();
    let bob = jid::BareJid::new("bob@localhost").unwrap();
    let storage = &server.running.as_ref().unwrap().server.storage;
    assert!(!storage.accounts().exists(&bob).await.unwrap());
    assert_eq!(storage.offline().count(&bob).await.unwrap(), 0);
    assert!(storage.roster().items(&bob).await.unwrap().is_empty());
    // The contact's roster no longer counts bob as a subscriber (the command runs the same
    // removal as the server, on the same database).
    assert_eq!(
        roster(&mut alice).await,
        [("bob@localhost".into(), "none".into())]
    );
    // Removing again is an error.
    assert!(
        app::user_remove(&server.config, "bob@localhost")
            .await
            .is_err()
    );
    recreated_bob_starts_empty(&server).await;
    server.shutdown().await;
}

const WITH_REGISTER: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[modules.mod_roster]
[modules.mod_offline]
[modules.mod_register]
password_strength = 40
"#;

/// A client on an encrypted stream that has not authenticated.
async fn unauthenticated(server: &TestServer) -> Client {
    let mut client = Client::connect(server.addr(common::STARTTLS)).await;
    client.open("localhost").await;
    client.starttls("localhost", &server.cert()).await;
    client
}

async fn register(client: &mut Client, id: &str, username: &str, password: &str) -> Element {
    client
        .send(&format!(
            "<iq type='set' id='{id}'><query xmlns='{REGISTER}'>\
             <username>{username}</username><password>{password}</password></query></iq>"
        ))
        .await;
    client.next().await
}

#[tokio::test]
async fn in_band_registration_creates_an_account_that_can_log_in() {
    let mut server = server(WITH_REGISTER).await;
    let mut client = unauthenticated(&server).await;
    let features = client.features.clone().unwrap();
    assert!(
        features.has_child("register", "http://jabber.org/features/iq-register"),
        "{features:?}"
    );
    client
        .send("<iq type='get' id='reg1'><query xmlns='jabber:iq:register'/></iq>")
        .await;
    let fields = client.next().await;
    assert_eq!(fields.attr("type"), Some("result"));
    let query = fields.get_child("query", REGISTER).unwrap();
    assert!(query.has_child("username", REGISTER));
    assert!(query.has_child("password", REGISTER));

    let created = register(&mut client, "reg2", "carol", "a long enough passphrase").await;
    assert_eq!(created.attr("type"), Some("result"), "{created:?}");
    client
        .scram("SCRAM-SHA-256", "carol", "a long enough passphrase")
        .await
        .unwrap();
    client.open("localhost").await;
    assert_eq!(client.bind(Some("r")).await, "carol@localhost/r");
    server.shutdown().await;
}

#[tokio::test]
async fn registering_a_taken_name_is_a_conflict_and_a_weak_password_not_acceptable() {
    let mut server = server(WITH_REGISTER).await;
    let mut client = unauthenticated(&server).await;
    let taken = register(&mut client, "r1", "alice", "a long enough passphrase").await;
    assert_eq!(error_condition(&taken).as_deref(), Some("conflict"));
    let weak = register(&mut client, "r2", "dave", "12345").await;
    assert_eq!(error_condition(&weak).as_deref(), Some("not-acceptable"));
    let empty = register(&mut client, "r3", "dave", "").await;
    assert_eq!(error_condition(&empty).as_deref(), Some("not-acceptable"));
    server.shutdown().await;
}

#[tokio::test]
async fn without_mod_register_nobody_registers_in_band() {
    let mut server = server(CONFIG).await;
    let mut client = unauthenticated(&server).await;
    let features = client.features.clone().unwrap();
    assert!(!features.has_child("register", "http://jabber.org/features/iq-register"));
    client
        .send("<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>eve</username><password>secret secret</password></query></iq>")
        .await;
    // Only authentication is allowed before authenticating.
    assert_eq!(
        client.closed().await,
        Closed::StreamError("not-authorized".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_password_change_in_band_takes_effect_at_the_next_login() {
    let mut server = server(WITH_REGISTER).await;
    let mut alice = Client::login(&server, "alice@localhost", "alice-pass", "laptop").await;
    alice
        .send(
            "<iq type='set' id='change1' to='localhost'><query xmlns='jabber:iq:register'>\
             <username>alice</username><password>a brand new passphrase</password></query></iq>",
        )
        .await;
    let reply = alice.next().await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    // Another account's password is not hers to change.
    alice
        .send(
            "<iq type='set' id='change2'><query xmlns='jabber:iq:register'>\
             <username>bob</username><password>a brand new passphrase</password></query></iq>",
        )
        .await;
    assert_eq!(
        error_condition(&alice.next().await).as_deref(),
        Some("bad-request")
    );
    let mut old = unauthenticated(&server).await;
    assert!(
        old.scram("SCRAM-SHA-256", "alice", "alice-pass")
            .await
            .is_err()
    );
    let mut new = unauthenticated(&server).await;
    new.scram("SCRAM-SHA-256", "alice", "a brand new passphrase")
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn without_mod_register_a_password_change_is_not_allowed_but_cancellation_is() {
    let mut server = server(CONFIG).await;
    let mut alice = Client::login(&server, "alice@localhost", "alice-pass", "laptop").await;
    alice
        .send(
            "<iq type='set' id='change'><query xmlns='jabber:iq:register'>\
             <username>alice</username><password>a brand new passphrase</password></query></iq>",
        )
        .await;
    assert_eq!(
        error_condition(&alice.next().await).as_deref(),
        Some("not-allowed")
    );
    alice
        .send("<iq type='get' id='info'><query xmlns='jabber:iq:register'/></iq>")
        .await;
    let info = alice.next().await;
    let query = info.get_child("query", REGISTER).unwrap();
    assert!(query.has_child("registered", REGISTER));
    assert_eq!(
        query.get_child("username", REGISTER).unwrap().text(),
        "alice"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_keeps_registering_is_closed() {
    let mut server = server(WITH_REGISTER).await;
    let mut client = unauthenticated(&server).await;
    for n in 0..10 {
        client
            .send(&format!(
                "<iq type='get' id='f{n}'><query xmlns='jabber:iq:register'/></iq>"
            ))
            .await;
        assert_eq!(client.next().await.attr("type"), Some("result"));
    }
    client
        .send("<iq type='get' id='more'><query xmlns='jabber:iq:register'/></iq>")
        .await;
    assert_eq!(
        client.closed().await,
        Closed::StreamError("policy-violation".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_registration_from_the_same_address_waits_for_registration_timeout() {
    let config = WITH_REGISTER.replace("password_strength = 40", "registration_timeout = 2");
    let mut server = server(&config).await;
    let mut client = unauthenticated(&server).await;
    let first = register(&mut client, "r1", "dave", "a long enough passphrase").await;
    assert_eq!(first.attr("type"), Some("result"), "{first:?}");
    let mut other = unauthenticated(&server).await;
    let second = register(&mut other, "r2", "erin", "a long enough passphrase").await;
    assert_eq!(
        error_condition(&second).as_deref(),
        Some("resource-constraint")
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut later = unauthenticated(&server).await;
    let third = register(&mut later, "r3", "erin", "a long enough passphrase").await;
    assert_eq!(third.attr("type"), Some("result"), "{third:?}");
    server.shutdown().await;
}

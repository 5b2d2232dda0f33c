//! Black-box tests of the PostgreSQL engine (`backend = "rdbms"`): servers started in-process
//! from real configuration files, each test on a database of its own, clients and an app server
//! (XEP-0114 component) over real sockets. Two servers on one database share accounts and push
//! registrations; push enable/disable behave as on the embedded store; messages from several
//! senders at once are stored (in batches) under the limit and delivered in order; the database
//! connections dying mid-run is survived.
//!
//! Without a reachable PostgreSQL (`HERALD_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) every test prints `SKIPPED: ...` and passes.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{TestServer, client::Client, component::Component};
use herald_storage::test_database::TestDatabase;
use herald_stream::Frame;
use minidom::Element;

const PUSH: &str = "urn:xmpp:push:0";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const APP_SERVER: &str = "push.localhost";
const QUIET: Duration = Duration::from_millis(400);

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

[auth]
methods = ["rdbms"]

[modules.mod_disco]
[modules.mod_roster]
backend = "rdbms"
[modules.mod_offline]
backend = "rdbms"

[modules.mod_event_pusher.push]
backend = "rdbms"
wpool.workers = 4
"#;

/// A server on `database`.
async fn start(database: &TestDatabase) -> TestServer {
    TestServer::start(&format!("{CONFIG}\n{}", database.config_section(4))).await
}

/// The app server: a component (XEP-0114) that receives the publishes.
struct AppServer(Component);

impl AppServer {
    async fn connect(server: &TestServer) -> AppServer {
        let addr: SocketAddr = server.running.as_ref().unwrap().service_addrs[0];
        AppServer(Component::connect(addr, APP_SERVER, "secret").await)
    }

    /// The node of the next publish, after answering it with a result; panics after 10 s.
    async fn publish(&mut self) -> String {
        let iq = match self.0.frame(Duration::from_secs(10)).await {
            Some(Frame::Element(iq)) => iq,
            other => panic!("expected a publish, got {other:?}"),
        };
        let node = iq
            .get_child("pubsub", PUBSUB)
            .and_then(|pubsub| pubsub.get_child("publish", PUBSUB))
            .and_then(|publish| publish.attr("node"))
            .unwrap_or_else(|| panic!("not a publish: {iq:?}"))
            .to_owned();
        let reply = format!(
            "<iq type='result' id='{}' from='{APP_SERVER}' to='{}'/>",
            iq.attr("id").unwrap_or_default(),
            iq.attr("from").unwrap_or_default()
        );
        self.0.send(&reply).await;
        node
    }

    async fn nothing(&mut self) -> bool {
        match self.0.frame(QUIET).await {
            None => true,
            Some(other) => panic!("expected no publish, got {other:?}"),
        }
    }
}

async fn iq(client: &mut Client, xml: &str) -> Element {
    client.send(xml).await;
    client.next_non_presence().await
}

fn enable(node: &str) -> String {
    format!(
        "<iq type='set' id='en-{node}'><enable xmlns='{PUSH}' jid='{APP_SERVER}' node='{node}'/></iq>"
    )
}

fn disable(node: &str) -> String {
    format!(
        "<iq type='set' id='dis-{node}'><disable xmlns='{PUSH}' jid='{APP_SERVER}' node='{node}'/></iq>"
    )
}

fn chat(body: &str) -> String {
    format!("<message to='alice@localhost' type='chat' id='m'><body>{body}</body></message>")
}

fn error_of(reply: &Element) -> (String, String) {
    assert_eq!(reply.attr("type"), Some("error"), "{reply:?}");
    let error = reply
        .children()
        .find(|c| c.name() == "error")
        .expect("an error element");
    let condition = error
        .children()
        .find(|c| c.ns() == STANZAS)
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    (error.attr("type").unwrap_or_default().to_owned(), condition)
}

/// Alice (no presence) runs one push IQ; returns the reply.
async fn alice_iq(server: &TestServer, xml: &str) -> Element {
    let mut alice = Client::login(server, "alice@localhost", "a-pass", "phone").await;
    let reply = iq(&mut alice, xml).await;
    alice.send("</stream:stream>").await;
    alice.closed().await;
    reply
}

#[tokio::test]
async fn enable_notifies_and_disable_stops_notifications() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut server = start(&database).await;
    server.add_user("alice@localhost", "a-pass").await;
    server.add_user("bob@localhost", "b-pass").await;
    let mut app = AppServer::connect(&server).await;
    let reply = alice_iq(&server, &enable("n1")).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let mut bob = Client::online(&server, "bob@localhost", "b-pass", "laptop", 0).await;
    bob.send(&chat("hi")).await;
    assert_eq!(app.publish().await, "n1");
    let reply = alice_iq(&server, &disable("n1")).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    bob.send(&chat("again")).await;
    assert!(app.nothing().await);
    // Gone from the database after disable.
    let storage = &server.running.as_ref().unwrap().server.storage;
    assert_eq!(registrations_count(storage).await, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn disable_without_node_removes_every_node_at_that_service() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut server = start(&database).await;
    server.add_user("alice@localhost", "a-pass").await;
    server.add_user("bob@localhost", "b-pass").await;
    let mut app = AppServer::connect(&server).await;
    for node in ["n1", "n2"] {
        let reply = alice_iq(&server, &enable(node)).await;
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    }
    assert_eq!(
        registrations_count(&server.running.as_ref().unwrap().server.storage).await,
        2
    );
    let reply = alice_iq(
        &server,
        &format!("<iq type='set' id='d'><disable xmlns='{PUSH}' jid='{APP_SERVER}'/></iq>"),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let mut bob = Client::online(&server, "bob@localhost", "b-pass", "laptop", 0).await;
    bob.send(&chat("hi")).await;
    assert!(app.nothing().await);
    server.shutdown().await;
}

#[tokio::test]
async fn enable_without_node_is_bad_request() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut server = start(&database).await;
    server.add_user("alice@localhost", "a-pass").await;
    let reply = alice_iq(
        &server,
        &format!("<iq type='set' id='bad'><enable xmlns='{PUSH}' jid='{APP_SERVER}'/></iq>"),
    )
    .await;
    assert_eq!(error_of(&reply), ("modify".into(), "bad-request".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn two_servers_on_one_database_share_accounts_and_registrations() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut first = start(&database).await;
    let mut second = start(&database).await;
    // Accounts created through the first are there for the second.
    first.add_user("alice@localhost", "a-pass").await;
    first.add_user("bob@localhost", "b-pass").await;
    // Alice enables push through the second...
    let reply = alice_iq(&second, &enable("from-second")).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    // ...and the first uses it when it handles her messages.
    let mut app = AppServer::connect(&first).await;
    let mut bob = Client::online(&first, "bob@localhost", "b-pass", "laptop", 0).await;
    bob.send(&chat("hi")).await;
    assert_eq!(app.publish().await, "from-second");
    // Disabled through the first, gone for the second too.
    let reply = alice_iq(&first, &disable("from-second")).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let mut app_on_second = AppServer::connect(&second).await;
    let mut bob_on_second = Client::online(&second, "bob@localhost", "b-pass", "tablet", 0).await;
    bob_on_second.send(&chat("again")).await;
    assert!(app_on_second.nothing().await);
    first.shutdown().await;
    second.shutdown().await;
}

/// 25 chat messages to alice from `client`, numbered in their bodies.
async fn send_many(client: &mut Client, name: &str) {
    for n in 0..25 {
        client
            .send(&format!(
                "<message to='alice@localhost' type='chat' id='{name}-{n}'><body>{name} {n}</body></message>"
            ))
            .await;
    }
}

#[tokio::test]
async fn messages_from_several_senders_at_once_are_stored_under_the_limit_and_delivered_in_order() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let config = format!(
        "{}\n{}",
        CONFIG.replace(
            "[modules.mod_offline]\nbackend = \"rdbms\"",
            "[modules.mod_offline]\nbackend = \"rdbms\"\nmax_user_offline_messages = 90",
        ),
        database.config_section(4)
    );
    let mut server = TestServer::start(&config).await;
    server.add_user("alice@localhost", "a-pass").await;
    let names = ["bob", "carol", "dave", "erin"];
    let mut senders = Vec::new();
    for name in names {
        server.add_user(&format!("{name}@localhost"), "pass").await;
        senders
            .push(Client::online(&server, &format!("{name}@localhost"), "pass", "laptop", 0).await);
    }
    // 100 messages for alice, 25 from each sender, the four at once: their stores meet in
    // batches; the last 10 find the limit (90) reached and come back as errors.
    let [bob, carol, dave, erin] = &mut senders[..] else {
        unreachable!()
    };
    tokio::join!(
        send_many(bob, "bob"),
        send_many(carol, "carol"),
        send_many(dave, "dave"),
        send_many(erin, "erin"),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut bounced = 0;
    while bounced < 10 {
        assert!(tokio::time::Instant::now() < deadline, "{bounced} bounced");
        for client in &mut senders {
            for reply in client.drain(Duration::from_millis(100)).await {
                assert_eq!(
                    error_of(&reply),
                    ("wait".into(), "resource-constraint".into())
                );
                bounced += 1;
            }
        }
    }
    let storage = &server.running.as_ref().unwrap().server.storage;
    let alice = jid::BareJid::new("alice@localhost").unwrap();
    assert_eq!(storage.offline().count(&alice).await.unwrap(), 90);

    let mut alice = Client::online(&server, "alice@localhost", "a-pass", "phone", 0).await;
    let mut next = std::collections::HashMap::new();
    for _ in 0..90 {
        let message = alice.next_non_presence().await;
        let body = message
            .get_child("body", "jabber:client")
            .expect("a body")
            .text();
        let (name, n) = body.split_once(' ').expect("name and number");
        let n: u32 = n.parse().unwrap();
        let expected = next.entry(name.to_owned()).or_insert(0);
        assert_eq!(n, *expected, "{name}'s messages out of order");
        *expected += 1;
    }
    assert_eq!(next.values().sum::<u32>(), 90);
    server.shutdown().await;
}

#[tokio::test]
async fn push_iqs_succeed_after_the_database_connections_are_terminated() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut server = start(&database).await;
    server.add_user("alice@localhost", "a-pass").await;
    server.add_user("bob@localhost", "b-pass").await;
    let mut app = AppServer::connect(&server).await;
    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "phone").await;
    let reply = iq(&mut alice, &enable("before")).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    // An administrator kills every connection of the pool mid-run.
    assert!(database.terminate_connections().await > 0);
    // Every request still gets an answer, and once the pool has replaced the dead
    // connections they succeed; a failure in between must be wait/internal-server-error.
    let mut enabled = false;
    for attempt in 0..5 {
        let reply = iq(&mut alice, &enable("after")).await;
        if reply.attr("type") == Some("result") {
            enabled = true;
            break;
        }
        assert_eq!(
            error_of(&reply),
            ("wait".into(), "internal-server-error".into()),
            "attempt {attempt}"
        );
    }
    assert!(enabled, "the pool did not recover");
    alice.send("</stream:stream>").await;
    alice.closed().await;
    let mut bob = Client::online(&server, "bob@localhost", "b-pass", "laptop", 0).await;
    bob.send(&chat("hi")).await;
    let mut nodes = vec![app.publish().await, app.publish().await];
    nodes.sort();
    assert_eq!(nodes, ["after", "before"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_push_iq_while_the_database_is_unreachable_is_answered_wait_internal_server_error() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut server = start(&database).await;
    server.add_user("alice@localhost", "a-pass").await;
    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "phone").await;
    let reply = iq(&mut alice, &enable("before")).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    // The database goes away: new connections are refused and the pool's are killed.
    database.accept_connections(false).await;
    assert!(database.terminate_connections().await > 0);
    let started = std::time::Instant::now();
    let reply = iq(&mut alice, &enable("during")).await;
    assert_eq!(
        error_of(&reply),
        ("wait".into(), "internal-server-error".into()),
        "after {:?}",
        started.elapsed()
    );
    // It comes back: the same session's next request succeeds.
    database.accept_connections(true).await;
    let reply = iq(&mut alice, &enable("after")).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    assert_eq!(
        registrations_count(&server.running.as_ref().unwrap().server.storage).await,
        2,
        "\"before\" and \"after\"; nothing half-written for \"during\""
    );
    server.shutdown().await;
}

/// How many push registrations the accounts of the database hold, read through the
/// PostgreSQL registration store.
async fn registrations_count(storage: &herald_storage::Storage) -> usize {
    use herald_push::registrations::{PostgresRegistrations, RegistrationStore};
    let herald_storage::Engine::Postgres(pool) = storage.engine() else {
        panic!("a PostgreSQL storage");
    };
    let store = PostgresRegistrations::new(pool.clone());
    let mut count = 0;
    for account in storage.accounts().list(None).await.unwrap() {
        count += store.list(&account).await.unwrap().len();
    }
    count
}

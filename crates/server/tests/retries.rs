//! Push that never misses, on the app server's side (docs/modules/push.md, "Retries and the
//! outbox"): an app server that is sick (`wait` errors, gone for a while) gets every
//! notification once it is back, none twice; notifications pending when herald stops are
//! sent after it starts again.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, client::Client, component::Component};
use herald_stream::Frame;
use minidom::Element;

const APP_SERVER: &str = "push.localhost";

fn config() -> String {
    r#"
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

[modules.mod_offline]

[modules.mod_event_pusher.push]
retry.backoff_base = 100
retry.backoff_max = 1
retry.max_retries = 20
# Every message notified on its own: these cases count notifications per message.
pacing.rate_limit = 0
"#
    .to_owned()
}

async fn start() -> TestServer {
    let server = TestServer::start(&config()).await;
    server.add_user("alice@localhost", "pw").await;
    server.add_user("bob@localhost", "pw").await;
    server
}

async fn app_server(server: &TestServer) -> Component {
    let addr = server.running.as_ref().unwrap().service_addrs[0];
    Component::connect(addr, APP_SERVER, "secret").await
}

/// Alice enables push on `node` and goes offline.
async fn alice_registers(server: &TestServer) {
    let mut alice = Client::login(server, "alice@localhost", "pw", "phone").await;
    alice
        .send(&format!(
            "<iq type='set' id='push'><enable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}' node='node'/></iq>"
        ))
        .await;
    loop {
        let reply = alice.next().await;
        if reply.name() == "iq" {
            assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
            break;
        }
    }
    alice.send("</stream:stream>").await;
    let _ = alice.closed().await;
}

async fn send_all(bob: &mut Client, bodies: impl IntoIterator<Item = String>) {
    for body in bodies {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat' id='{body}'><body>{body}</body></message>"
        ))
        .await;
    }
}

/// The next publish IQ within `within`.
async fn next_publish(app: &mut Component, within: Duration) -> Option<Element> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match app.frame(left).await {
            Some(Frame::Element(iq)) if iq.name() == "iq" => return Some(iq),
            Some(_) => continue,
            None => return None,
        }
    }
}

async fn answer(app: &mut Component, iq: &Element, error: Option<&str>) {
    let xml = match error {
        None => format!(
            "<iq type='result' id='{}' from='{APP_SERVER}' to='{}'/>",
            iq.attr("id").unwrap(),
            iq.attr("from").unwrap()
        ),
        Some(condition) => format!(
            "<iq type='error' id='{}' from='{APP_SERVER}' to='{}'><error type='wait'>\
             <{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
            iq.attr("id").unwrap(),
            iq.attr("from").unwrap()
        ),
    };
    app.send(&xml).await;
}

fn body(iq: &Element) -> String {
    fn find(element: &Element) -> Option<String> {
        for child in element.children() {
            if child.name() == "field" && child.attr("var") == Some("last-message-body") {
                return child.children().next().map(Element::text);
            }
            if let Some(found) = find(child) {
                return Some(found);
            }
        }
        None
    }
    find(iq).unwrap_or_default()
}

/// Every publish until `quiet` passes with none, answered with a result: their bodies.
async fn collect(app: &mut Component, quiet: Duration) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(iq) = next_publish(app, quiet).await {
        answer(app, &iq, None).await;
        bodies.push(body(&iq));
    }
    bodies
}

#[tokio::test]
async fn an_app_server_answering_wait_twice_then_result_gets_one_notification_after_two_retries() {
    let mut server = start().await;
    let mut app = app_server(&server).await;
    alice_registers(&server).await;
    let mut bob = Client::online(&server, "bob@localhost", "pw", "laptop", 0).await;
    send_all(&mut bob, ["hello".to_owned()]).await;
    for _ in 0..2 {
        let iq = next_publish(&mut app, Duration::from_secs(5))
            .await
            .expect("a try");
        assert_eq!(body(&iq), "hello");
        answer(&mut app, &iq, Some("resource-constraint")).await;
    }
    let iq = next_publish(&mut app, Duration::from_secs(5))
        .await
        .expect("the third try");
    assert_eq!(body(&iq), "hello");
    answer(&mut app, &iq, None).await;
    assert!(
        next_publish(&mut app, Duration::from_secs(2))
            .await
            .is_none(),
        "delivered: no more tries"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_app_server_killed_mid_load_and_restarted_gets_every_notification_once() {
    let mut server = start().await;
    let mut app = app_server(&server).await;
    alice_registers(&server).await;
    let mut bob = Client::online(&server, "bob@localhost", "pw", "laptop", 0).await;
    send_all(&mut bob, (0..10).map(|n| format!("m{n}"))).await;
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let iq = next_publish(&mut app, Duration::from_secs(5))
            .await
            .expect("a publish");
        answer(&mut app, &iq, None).await;
        bodies.push(body(&iq));
    }
    // The app server dies; the load goes on meanwhile.
    drop(app);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_all(&mut bob, (10..40).map(|n| format!("m{n}"))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut app = app_server(&server).await;
    bodies.extend(collect(&mut app, Duration::from_secs(3)).await);
    let mut sorted = bodies.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), bodies.len(), "none twice: {bodies:?}");
    assert_eq!(sorted.len(), 40, "every one: {bodies:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn notifications_pending_when_herald_stops_are_sent_after_it_starts_again() {
    let mut server = start().await;
    alice_registers(&server).await;
    let mut bob = Client::online(&server, "bob@localhost", "pw", "laptop", 0).await;
    // No app server yet: every try fails and waits for the next.
    send_all(&mut bob, (1..=3).map(|n| format!("p{n}"))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(bob);
    server.shutdown().await;
    server.running = Some(herald_server::app::start(&server.config).await.unwrap());
    let mut app = app_server(&server).await;
    let mut bodies = collect(&mut app, Duration::from_secs(4)).await;
    bodies.sort();
    assert_eq!(bodies, ["p1", "p2", "p3"]);
    server.shutdown().await;
}

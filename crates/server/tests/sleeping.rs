//! Sessions that sleep (docs/modules/push.md, "Sessions that sleep"): black-box tests of push
//! for a phone that vanished with push enabled (hibernation past `resume_timeout` until its
//! first push, a wake-up push before its end, a wake-up after a restart), for a message left
//! unacknowledged on a live connection (`max_ack_delay`), and for a client that said it is
//! inactive (XEP-0352). The plugin is `defaults` throughout.

mod common;

use std::time::{Duration, Instant};

use common::{
    STARTTLS, TestServer,
    client::Client,
    component::Component,
    phone::{Phone, body},
};
use herald_stream::Frame;
use jid::BareJid;
use minidom::Element;

const APP_SERVER: &str = "push.localhost";

/// A server with offline storage, stream management with `sm`, client state indication and
/// push with `push` added to its section; the app server is a component.
fn config(sm: &str, push: &str) -> String {
    format!(
        r#"
[general]
hosts = ["localhost"]
data_dir = "{{DATA}}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "secret"

[modules.mod_disco]
[modules.mod_offline]
[modules.mod_csi]

[modules.mod_event_pusher.push]
{push}

[modules.mod_stream_management]
{sm}
"#
    )
}

async fn start(config: &str) -> TestServer {
    let server = TestServer::start(config).await;
    server.add_user("alice@localhost", "pw").await;
    server.add_user("bob@localhost", "pw").await;
    server
}

async fn app_server(server: &TestServer) -> Component {
    let addr = server.running.as_ref().unwrap().service_addrs[0];
    Component::connect(addr, APP_SERVER, "secret").await
}

/// A notification the app server received (and answered with a result).
struct Published {
    node: String,
    count: Option<String>,
    body: Option<String>,
}

/// The next publish within `within`, answered with a result; `None` if none came.
async fn publish_within(app: &mut Component, within: Duration) -> Option<Published> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(Frame::Element(iq)) = app.frame(left).await else {
            return None;
        };
        if iq.name() != "iq" {
            continue;
        }
        let answer = format!(
            "<iq type='result' id='{}' from='{APP_SERVER}' to='{}'/>",
            iq.attr("id").unwrap(),
            iq.attr("from").unwrap()
        );
        app.send(&answer).await;
        let publish = iq
            .get_child("pubsub", "http://jabber.org/protocol/pubsub")
            .and_then(|p| p.get_child("publish", "http://jabber.org/protocol/pubsub"))
            .expect("a publish");
        return Some(Published {
            node: publish.attr("node").unwrap_or_default().to_owned(),
            count: find_field(publish, "message-count"),
            body: find_field(publish, "last-message-body"),
        });
    }
}

async fn publish(app: &mut Component, within: Duration) -> Published {
    publish_within(app, within)
        .await
        .unwrap_or_else(|| panic!("no publish within {within:?}"))
}

fn find_field(element: &Element, var: &str) -> Option<String> {
    for child in element.children() {
        if child.name() == "field" && child.attr("var") == Some(var) {
            return child.children().next().map(Element::text);
        }
        if let Some(found) = find_field(child, var) {
            return Some(found);
        }
    }
    None
}

/// Alice's phone: stream management with resumption, push enabled on `phone-node`,
/// available, everything acknowledged.
async fn phone(server: &TestServer) -> Phone {
    let mut phone = Phone::login(server, "alice@localhost", "phone").await;
    let reply = phone
        .iq(&format!(
            "<iq type='set' id='push'><enable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}' node='phone-node'/></iq>"
        ))
        .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    phone.available().await;
    phone.ack_all().await;
    phone
}

async fn bob(server: &TestServer) -> Client {
    Client::online(server, "bob@localhost", "pw", "laptop", 0).await
}

fn chat(to: &str, text: &str) -> String {
    format!("<message to='{to}' type='chat' id='{text}'><body>{text}</body></message>")
}

async fn stored(server: &TestServer, user: &str) -> usize {
    let server = &server.running.as_ref().unwrap().server;
    server
        .storage
        .offline()
        .count(&BareJid::new(user).unwrap())
        .await
        .unwrap()
}

/// A new connection of alice's that asks to resume `id` having handled `h` stanzas.
async fn resume(server: &TestServer, id: &str, h: u32) -> (Client, Element) {
    let mut client = Client::connect(server.addr(STARTTLS)).await;
    client.open("localhost").await;
    client.starttls("localhost", &server.cert()).await;
    client.scram("SCRAM-SHA-256", "alice", "pw").await.unwrap();
    client.open("localhost").await;
    client
        .send(&format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='{h}'/>"
        ))
        .await;
    let answer = client.next().await;
    (client, answer)
}

/// The next message on a raw client (stream-management elements skipped, not answered).
async fn next_message(client: &mut Client) -> Element {
    loop {
        let element = client.next().await;
        if element.name() == "message" {
            return element;
        }
    }
}

#[tokio::test]
async fn a_vanished_session_with_push_enabled_outlives_resume_timeout_and_resumes_after_its_first_push()
 {
    let mut server = start(&config("resume_timeout = 1", "")).await;
    let mut app = app_server(&server).await;
    let phone = phone(&server).await;
    let (id, handled) = (phone.id.clone(), phone.handled);
    drop(phone);
    // Well past resume_timeout: without push the session would be over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut bob = bob(&server).await;
    bob.send(&chat("alice@localhost", "wake up")).await;
    let pushed = publish(&mut app, Duration::from_secs(5)).await;
    assert_eq!(pushed.node, "phone-node");
    assert_eq!(pushed.body.as_deref(), Some("wake up"));
    // The phone comes back on the push and finds its session, message included.
    let (mut client, resumed) = resume(&server, &id, handled).await;
    assert_eq!(resumed.name(), "resumed", "{resumed:?}");
    assert_eq!(body(&next_message(&mut client).await), "wake up");
    assert_eq!(
        stored(&server, "alice@localhost").await,
        0,
        "kept in the session"
    );
    assert!(
        publish_within(&mut app, Duration::from_millis(500))
            .await
            .is_none(),
        "one push"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_session_without_push_still_ends_at_resume_timeout() {
    let mut server = start(&config("resume_timeout = 1", "")).await;
    let phone = Phone::login(&server, "alice@localhost", "phone").await;
    let id = phone.id.clone();
    drop(phone);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_client, answer) = resume(&server, &id, 0).await;
    assert_eq!(answer.name(), "failed", "{answer:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_hibernating_session_gets_a_wake_up_push_before_it_expires_then_ends() {
    let keepalive = "keepalive.resume_timeout = 4\nkeepalive.wake_before = 2";
    let mut server = start(&config("resume_timeout = 1", keepalive)).await;
    let mut app = app_server(&server).await;
    let phone = phone(&server).await;
    let id = phone.id.clone();
    let lost = Instant::now();
    drop(phone);
    let wake = publish(&mut app, Duration::from_secs(4)).await;
    let at = lost.elapsed();
    assert_eq!(wake.node, "phone-node");
    assert_eq!(
        wake.count.as_deref(),
        Some("0"),
        "nothing waits in the session"
    );
    assert_eq!(wake.body, None);
    assert!(
        at >= Duration::from_millis(1500) && at < Duration::from_secs(4),
        "woken two seconds before the end: {at:?}"
    );
    // The phone did not come back: the session ends at keepalive.resume_timeout.
    tokio::time::sleep(
        Duration::from_secs(4).saturating_sub(lost.elapsed()) + Duration::from_millis(700),
    )
    .await;
    let (_client, answer) = resume(&server, &id, 0).await;
    assert_eq!(answer.name(), "failed", "{answer:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_session_hibernating_when_the_server_stops_is_woken_after_start() {
    let mut server = start(&config("resume_timeout = 1", "")).await;
    let phone = phone(&server).await;
    drop(phone);
    // Hibernating from one second on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.shutdown().await;
    server.running = Some(herald_server::app::start(&server.config).await.unwrap());
    let mut app = app_server(&server).await;
    let wake = publish(&mut app, Duration::from_secs(6)).await;
    assert_eq!(wake.node, "phone-node");
    assert_eq!(wake.count.as_deref(), Some("0"));
    // Once.
    server.shutdown().await;
    server.running = Some(herald_server::app::start(&server.config).await.unwrap());
    let mut app = app_server(&server).await;
    assert!(
        publish_within(&mut app, Duration::from_secs(3))
            .await
            .is_none(),
        "a second restart wakes nobody"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_left_unacknowledged_past_the_delay_pushes_once_and_not_again_when_the_session_ends()
 {
    let mut server = start(&config("max_ack_delay = 1\nack_timeout = 30", "")).await;
    let mut app = app_server(&server).await;
    let mut phone = phone(&server).await;
    let mut bob = bob(&server).await;
    bob.send(&chat("alice@localhost", "unread")).await;
    // The app is suspended with its socket open: the message is read off the socket by the
    // kernel, and the ack request is never answered.
    assert_eq!(body(&next_message(&mut phone.client).await), "unread");
    let written = Instant::now();
    let pushed = publish(&mut app, Duration::from_secs(5)).await;
    assert_eq!(pushed.node, "phone-node");
    assert_eq!(pushed.body.as_deref(), Some("unread"));
    assert!(
        written.elapsed() >= Duration::from_millis(700),
        "{:?}",
        written.elapsed()
    );
    assert!(
        publish_within(&mut app, Duration::from_millis(1500))
            .await
            .is_none(),
        "once"
    );
    // The session ends without an ack: the message goes to storage, not pushed again.
    phone.client.send("</stream:stream>").await;
    assert!(
        publish_within(&mut app, Duration::from_millis(1500))
            .await
            .is_none(),
        "not again at the session's end"
    );
    assert_eq!(stored(&server, "alice@localhost").await, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_to_a_user_whose_every_session_is_inactive_pushes_and_one_active_session_stops_it()
 {
    let mut server = start(&config("", "")).await;
    let mut app = app_server(&server).await;
    let mut phone = phone(&server).await;
    phone
        .client
        .send("<inactive xmlns='urn:xmpp:csi:0'/>")
        .await;
    let mut bob = bob(&server).await;
    bob.send(&chat("alice@localhost", "while inactive")).await;
    let pushed = publish(&mut app, Duration::from_secs(3)).await;
    assert_eq!(pushed.node, "phone-node");
    assert_eq!(pushed.body.as_deref(), Some("while inactive"));
    assert_eq!(body(&phone.messages(1).await[0]), "while inactive");

    // A desktop session that is active: someone is looking, no push.
    let mut desktop = Client::online(&server, "alice@localhost", "pw", "desktop", 0).await;
    bob.send(&chat("alice@localhost", "seen on the desktop"))
        .await;
    assert_eq!(
        body(&next_message(&mut desktop).await),
        "seen on the desktop"
    );
    assert_eq!(body(&phone.messages(1).await[0]), "seen on the desktop");
    assert!(
        publish_within(&mut app, Duration::from_millis(1500))
            .await
            .is_none(),
        "one active session: no push"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn push_when_inactive_can_be_turned_off() {
    let mut server = start(&config("", "push_when_inactive = false")).await;
    let mut app = app_server(&server).await;
    let mut phone = phone(&server).await;
    phone
        .client
        .send("<inactive xmlns='urn:xmpp:csi:0'/>")
        .await;
    let mut bob = bob(&server).await;
    bob.send(&chat("alice@localhost", "quiet")).await;
    assert_eq!(body(&phone.messages(1).await[0]), "quiet");
    assert!(
        publish_within(&mut app, Duration::from_millis(1500))
            .await
            .is_none()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn declarative_rules_decide_instead_of_a_plugin() {
    // Push an offline user's chat messages with a body, except those hinted no-store; push
    // nothing for inactive clients (no rule for them).
    let rules = r#"
[[modules.mod_event_pusher.push.rules]]
hint = "no-store"
action = "skip"
[[modules.mod_event_pusher.push.rules]]
event = "message"
type = "chat"
body = true
user_status = "offline"
action = "push"
"#;
    let text = config("", "").replace("[modules.mod_event_pusher.push]\n", "") + rules;
    let mut server = start(&text).await;
    let mut app = app_server(&server).await;
    let mut phone = phone(&server).await;
    phone
        .client
        .send("<inactive xmlns='urn:xmpp:csi:0'/>")
        .await;
    let mut bob = bob(&server).await;
    bob.send(&chat("alice@localhost", "inactive")).await;
    assert_eq!(body(&phone.messages(1).await[0]), "inactive");
    assert!(
        publish_within(&mut app, Duration::from_millis(1000))
            .await
            .is_none(),
        "no rule pushes for an inactive client"
    );
    phone.ack_all().await;
    phone.client.send("</stream:stream>").await;
    drop(phone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.send(
        "<message to='alice@localhost' type='chat' id='h'><body>secret</body>\
         <no-store xmlns='urn:xmpp:hints'/></message>",
    )
    .await;
    bob.send(&chat("alice@localhost", "offline")).await;
    let pushed = publish(&mut app, Duration::from_secs(3)).await;
    assert_eq!(
        pushed.body.as_deref(),
        Some("offline"),
        "the no-store message is skipped"
    );
    assert!(
        publish_within(&mut app, Duration::from_millis(800))
            .await
            .is_none()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn with_the_archive_on_two_sessions_in_resumption_push_a_message_once_to_the_device() {
    // push.md section 7 allows one push per session; the outbox knows the message by its
    // archive id and sends it once.
    let text = config("", "plugin_module = \"enhanced\"") + "\n[modules.mod_mam]\n";
    let mut server = start(&text).await;
    let mut app = app_server(&server).await;
    let mut first = phone(&server).await;
    let mut second = Phone::login(&server, "alice@localhost", "tablet").await;
    let reply = second
        .iq(&format!(
            "<iq type='set' id='push'><enable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}' node='phone-node'/></iq>"
        ))
        .await;
    assert_eq!(reply.attr("type"), Some("result"));
    second.available().await;
    second.ack_all().await;
    let mut bob = bob(&server).await;
    bob.send(&chat("alice@localhost", "both")).await;
    assert_eq!(body(&next_message(&mut first.client).await), "both");
    assert_eq!(body(&next_message(&mut second.client).await), "both");
    drop(first);
    drop(second);
    let pushed = publish(&mut app, Duration::from_secs(5)).await;
    assert_eq!(pushed.body.as_deref(), Some("both"));
    assert!(
        publish_within(&mut app, Duration::from_millis(1500))
            .await
            .is_none(),
        "once"
    );
    server.shutdown().await;
}
